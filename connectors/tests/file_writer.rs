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
