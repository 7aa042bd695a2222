//! ADT^A01 -> FHIR transaction Bundle with the bundled `adt` mapping, on one core: parse the
//! message, run the mapping, serialise the Bundle (what the channel does for each message).
//! Target on this project's 2-core machine: >= 20,000 messages/s.
//!
//! Full run: `cargo bench -p passerelle-mapping --bench adt`
//! Fast run (CI): add `-- --quick`.

// The allocator the engine runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use passerelle_hl7v2::Message;
use passerelle_mapping::Library;

fn adt_a01(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (library, problems) =
        Library::load(&root.join("mappings"), &root.join("schemas/conceptmaps"));
    assert!(problems.is_empty(), "{problems:?}");
    let mapping = library.mapping("adt").expect("the bundled adt mapping");
    println!("target: >= 20,000 ADT^A01 messages/s on one core (parse + map + serialise)");
    let mut group = c.benchmark_group("adt-a01-to-bundle");
    group.throughput(Throughput::Elements(1));
    // The admission of the golden tests (patient, stay, movement), and a fuller one with
    // next of kin, insurance, allergy, diagnosis and DMP consents (11 resources).
    for name in ["a01-admit", "a01-full-stay"] {
        let path = root.join(format!("mappings/hl7v2/adt.tests/{name}.hl7"));
        let text = std::fs::read(path).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let message = Message::parse(black_box(&text)).unwrap();
                let output = library.run(mapping, &message).unwrap();
                black_box(serde_json::to_vec(&output.bundle).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, adt_a01);
criterion_main!(benches);
