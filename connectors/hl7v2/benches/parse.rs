//! Parse throughput on a realistic ORU^R01 at 1 KB, 10 KB and 200 KB (the
//! larger ones repeat OBX segments), side by side with hl7-parser and er7.
//!
//! Full run: `cargo bench -p passerelle-hl7v2 --bench parse -- --warm-up-time 1 --measurement-time 3`
//! Fast run (CI): add `--quick`, or set `PASSERELLE_BENCH_QUICK=1`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use passerelle_hl7v2::Message;

const HEAD: &str = "MSH|^~\\&|LABSYS|CENTRAL LAB^2.16.840.1.113883.3.72^ISO|EHR|GENERAL HOSPITAL^2.16.840.1.113883.3.99^ISO|20240612143015+0200||ORU^R01^ORU_R01|LAB20240612143015001|P|2.5.1|||AL|NE||UNICODE UTF-8|||LRI_Common_Component^^2.16.840.1.113883.9.16^ISO\r\
PID|1||123456789^^^GENERAL HOSPITAL&2.16.840.1.113883.3.99&ISO^MR~987654321^^^NATIONAL&1.2.250.1.213.1.4.8&ISO^NI||DUPONT^MARIE^CLAIRE^^MME^^L||19750315|F|||12 RUE DES LILAS^^LYON^^69003^FRA^H||^PRN^PH^^33^4^78123456|||M||ACC123456^^^GENERAL HOSPITAL^AN\r\
PV1|1|I|CARDIO^204^B^GENERAL HOSPITAL||||12345^MARTIN^PAUL^^^DR^^^NPI^L^^^DN|||CAR||||7|||12345^MARTIN^PAUL^^^DR|IP|VN20240612001^^^GENERAL HOSPITAL^VN|||||||||||||||||||||||||20240610083000\r\
ORC|RE|ORD448811^EHR|LAB9988^LABSYS||CM||||20240612080000|||12345^MARTIN^PAUL^^^DR^^^NPI\r\
OBR|1|ORD448811^EHR|LAB9988^LABSYS|24323-8^Comprehensive metabolic panel^LN|||20240612073000|||||||||12345^MARTIN^PAUL^^^DR|||||||20240612142900|||F\r";

fn obx(i: usize) -> String {
    format!(
        "OBX|{i}|NM|2345-7^Glucose [Mass/volume] in Serum or Plasma^LN^GLU^Glucose^L||{}|mg/dL^milligram per deciliter^UCUM|70-99|N|||F|||20240612073000|CL^Central Lab^L|TECH42^LEROY^JULIE\r",
        80 + i % 25
    )
}

fn message(target: usize) -> String {
    let mut text = HEAD.to_string();
    let mut i = 1;
    while text.len() + 180 < target {
        text.push_str(&obx(i));
        i += 1;
    }
    text.push_str(
        "NTE|1|L|Specimen received at 07:45\\.br\\Results validated by \\H\\Dr LEROY\\N\\\r",
    );
    text
}

/// Reads every field, repetition, component and subcomponent, as a
/// consumer walking the whole message would.
fn walk(msg: &Message<'_>) -> usize {
    let mut total = 0;
    for seg in msg.segments() {
        for field in seg.fields() {
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        total += sub.raw().len();
                    }
                }
            }
        }
    }
    total
}

fn bench(c: &mut Criterion) {
    for (label, size) in [("1KB", 1024), ("10KB", 10 * 1024), ("200KB", 200 * 1024)] {
        let text = message(size);
        let bytes = text.as_bytes();
        // Sanity: every parser accepts the input.
        Message::parse(bytes).expect("passerelle parses");
        hl7_parser::Message::parse(&text).expect("hl7-parser parses");
        er7::parse(&text).expect("er7 parses");

        let mut group = c.benchmark_group(format!("parse/{label}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("passerelle", "parse"), |b| {
            b.iter(|| Message::parse(black_box(bytes)).unwrap())
        });
        group.bench_function(BenchmarkId::new("passerelle", "parse+walk"), |b| {
            b.iter(|| walk(&Message::parse(black_box(bytes)).unwrap()))
        });
        // The other two take &str: their UTF-8 validation is not timed, ours is.
        group.bench_function(BenchmarkId::new("hl7-parser-0.3", "parse"), |b| {
            b.iter(|| hl7_parser::Message::parse(black_box(&text)).unwrap())
        });
        group.bench_function(BenchmarkId::new("er7-0.1.4", "parse"), |b| {
            b.iter(|| er7::parse(black_box(&text)).unwrap())
        });
        group.finish();
    }
}

fn config() -> Criterion {
    let c = Criterion::default();
    if std::env::var_os("PASSERELLE_BENCH_QUICK").is_some() {
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(10)
    } else {
        c
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
