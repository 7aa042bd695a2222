use passerelle_connectors::file::FileWriter;
use std::io::ErrorKind;

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn writes_into_a_created_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("out").join("adt");
    let writer = FileWriter::new(&dir);
    let path = writer.write("msg-1.hl7", b"MSH|1").await.unwrap();
    assert_eq!(path, dir.join("msg-1.hl7"));
    assert_eq!(std::fs::read(&path).unwrap(), b"MSH|1");
    // No temporary file is left behind.
    assert_eq!(entries(&dir), vec!["msg-1.hl7"]);
}

#[tokio::test]
async fn writing_again_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let writer = FileWriter::new(dir.path());
    writer
        .write("a.hl7", b"a much longer first version")
        .await
        .unwrap();
    writer.write("a.hl7", b"second").await.unwrap();
    let path = writer.write("a.hl7", b"second").await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"second");
    assert_eq!(entries(dir.path()), vec!["a.hl7"]);
}

#[tokio::test]
async fn concurrent_writes_of_one_name_leave_one_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let writer = FileWriter::new(dir.path());
    let versions: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'0' + i; 10_000]).collect();
    let writes = versions.iter().map(|v| writer.write("same.hl7", v));
    for result in futures_util::future::join_all(writes).await {
        result.unwrap();
    }
    let content = std::fs::read(dir.path().join("same.hl7")).unwrap();
    assert!(versions.contains(&content));
    assert_eq!(entries(dir.path()), vec!["same.hl7"]);
}

#[tokio::test]
async fn rejects_names_that_leave_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("inner");
    let writer = FileWriter::new(&dir);
    for name in [
        "../x",
        "..",
        "a/b",
        "a\\b",
        "/etc/passwd",
        "",
        ".",
        "x..y",
        "nul\0",
    ] {
        let err = writer.write(name, b"nope").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name:?}");
    }
    assert!(!root.path().join("x").exists());
    assert_eq!(entries(root.path()), Vec::<String>::new());
}

#[test]
fn leftovers_of_a_dead_writer_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    // A pid that cannot be running (above the kernel's pid_max).
    let dead = dir.path().join(".MSG1.hl7.4194999-7.tmp");
    let ours = dir
        .path()
        .join(format!(".MSG2.hl7.{}-1.tmp", std::process::id()));
    let data = dir.path().join("MSG3.hl7");
    let look_alike = dir.path().join(".notes.tmp");
    for path in [&dead, &ours, &data, &look_alike] {
        std::fs::write(path, b"x").unwrap();
    }
    let writer = FileWriter::new(dir.path());
    assert_eq!(writer.remove_leftovers().unwrap(), 1);
    assert!(!dead.exists());
    assert!(ours.exists() && data.exists() && look_alike.exists());
}
