//! OCI image archives in memory: what the writer makes, the reader reads back (from
//! `manifest.json` and from `index.json` alone), the same bytes twice, and every
//! kind of bad archive refused with what is wrong.

use pibake_image::oci::{
    self, read_archive, read_member, write_archive, ImageToWrite, Layout, OciError, Platform,
    RuntimeConfig,
};
use pibake_image::tar::{Rootfs, SourceDateEpoch};
use pibake_image::{Content, Entry, EntryPath, Layer};
use std::io::Cursor;

fn layer() -> Vec<u8> {
    let mut tree = Rootfs::empty();
    tree.apply_layer(&Layer {
        name: "test".into(),
        entries: vec![Entry::file(
            EntryPath::new("hello.txt").expect("path"),
            Content::bytes("hello\n"),
            0o644,
        )],
    });
    let mut out = Vec::new();
    tree.write_tar(&mut out, SourceDateEpoch(1_700_000_000))
        .expect("layer");
    out
}

fn archive(arch: &str, tags: &[&str]) -> Vec<u8> {
    let layers = [layer()];
    let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    let image = ImageToWrite {
        platform: Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
        },
        runtime: RuntimeConfig {
            entrypoint: vec!["/hello".into()],
            env: vec!["PATH=/usr/bin".into()],
            exposed_ports: vec!["80/tcp".into()],
            working_dir: "/".into(),
        },
        layers: &layers,
        tags: &tags,
        epoch: SourceDateEpoch(1_700_000_000),
        created_by: "test",
    };
    let mut out = Vec::new();
    write_archive(&mut out, &image).expect("archive");
    out
}

/// The archive's members, by name, in order.
fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>, u64, u64)> {
    let mut ar = tar::Archive::new(Cursor::new(bytes));
    let mut out = Vec::new();
    for entry in ar.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let (uid, mtime) = (
            entry.header().uid().expect("uid"),
            entry.header().mtime().expect("mtime"),
        );
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("data");
        out.push((name, data, uid, mtime));
    }
    out
}

/// The archive rewritten without some members, or with one changed.
fn rewrite(bytes: &[u8], edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, _, _) in members(bytes) {
        if name.ends_with('/') || name == "." {
            continue;
        }
        if let Some(data) = edit(&name, data) {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, &name, &data[..]).expect("append");
        }
    }
    b.into_inner().expect("tar")
}

#[test]
fn written_archives_read_back_with_platform_and_tags() {
    let bytes = archive(
        "arm64",
        &["localhost/pibake/web:1", "localhost/pibake/web:latest"],
    );
    let info = read_archive(Cursor::new(&bytes)).expect("readable");
    assert_eq!(info.layout, Layout::DockerSave);
    assert_eq!(info.images.len(), 1);
    let image = &info.images[0];
    assert_eq!(image.platform.architecture, "arm64");
    assert_eq!(image.platform.debian_arch(), Some("arm64"));
    assert_eq!(
        info.tags(),
        ["localhost/pibake/web:1", "localhost/pibake/web:latest"]
    );
    // The layer is where the manifest says, and is the layer written.
    assert_eq!(image.layers.len(), 1);
    let got = read_member(Cursor::new(&bytes), &image.layers[0]).expect("layer");
    assert_eq!(got, layer());
    assert_eq!(
        image.layers[0],
        oci::blob_path(&oci::digest_of(&layer())).expect("path")
    );
}

#[test]
fn the_layout_is_docker_saves() {
    let bytes = archive("arm64", &["localhost/pibake/web:1"]);
    let all = members(&bytes);
    let names: Vec<&str> = all.iter().map(|m| m.0.as_str()).collect();
    // Sorted, parents first, the root directory first like the rootfs tars.
    assert_eq!(names[..3], ["./", "blobs/", "blobs/sha256/"]);
    assert_eq!(
        names[names.len() - 3..],
        ["index.json", "manifest.json", "oci-layout"]
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 14)
            .count(),
        3
    );
    assert!(
        all.iter().all(|m| m.2 == 0 && m.3 == 1_700_000_000),
        "root-owned, epoch times"
    );
    let get = |name: &str| {
        let data = &all.iter().find(|m| m.0 == name).expect(name).1;
        serde_json::from_slice::<serde_json::Value>(data).expect("json")
    };
    assert_eq!(get("oci-layout")["imageLayoutVersion"], "1.0.0");
    let index = get("index.json");
    assert_eq!(index["mediaType"], oci::INDEX_MEDIA_TYPE);
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"][oci::IMAGE_NAME_ANNOTATION],
        "localhost/pibake/web:1"
    );
    assert_eq!(entry["annotations"][oci::REF_NAME_ANNOTATION], "1");
    let docker = get("manifest.json");
    assert_eq!(docker[0]["RepoTags"][0], "localhost/pibake/web:1");
    let config = get(docker[0]["Config"].as_str().expect("config path"));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["config"]["Entrypoint"][0], "/hello");
    assert_eq!(
        config["config"]["ExposedPorts"]["80/tcp"],
        serde_json::json!({})
    );
    assert_eq!(config["rootfs"]["diff_ids"][0], oci::digest_of(&layer()));
}

#[test]
fn the_same_image_gives_the_same_bytes() {
    let a = archive("arm64", &["localhost/pibake/web:1"]);
    let b = archive("arm64", &["localhost/pibake/web:1"]);
    assert_eq!(oci::digest_of(&a), oci::digest_of(&b));
    assert_ne!(a, archive("amd64", &["localhost/pibake/web:1"]));
}

#[test]
fn an_oci_layout_without_manifest_json_reads_from_its_index() {
    let bytes = archive(
        "amd64",
        &["localhost/pibake/web:1", "localhost/pibake/web:2"],
    );
    let oci_only = rewrite(&bytes, |name, data| {
        (name != "manifest.json").then_some(data)
    });
    let info = read_archive(Cursor::new(&oci_only)).expect("readable");
    assert_eq!(info.layout, Layout::OciIndex);
    // Two index entries for one manifest: one image with both tags.
    assert_eq!(info.images.len(), 1);
    assert_eq!(info.images[0].platform.architecture, "amd64");
    assert_eq!(
        info.tags(),
        ["localhost/pibake/web:1", "localhost/pibake/web:2"]
    );
}

#[test]
fn bad_archives_are_refused_with_what_is_wrong() {
    let bytes = archive("arm64", &["localhost/pibake/web:1"]);
    let err = |bytes: &[u8]| read_archive(Cursor::new(bytes)).expect_err("refused");

    for not_tar in [&b"a short text\n"[..], &[b'x'; 2048][..], b""] {
        let e = err(not_tar);
        assert!(matches!(e, OciError::NotTar(_)), "{e}");
    }
    let neither = rewrite(&bytes, |name, data| {
        (!["manifest.json", "index.json"].contains(&name)).then_some(data)
    });
    assert!(
        matches!(err(&neither), OciError::NoManifest),
        "{}",
        err(&neither)
    );

    // A config that is not its digest.
    let config = members(&bytes)
        .into_iter()
        .find(|m| m.0.starts_with("blobs/") && m.1.starts_with(b"{\"created\""))
        .expect("config")
        .0;
    let tampered = rewrite(&bytes, |name, data| {
        Some(if name == config {
            String::from_utf8(data)
                .expect("json")
                .replace("arm64", "amd64")
                .into_bytes()
        } else {
            data
        })
    });
    let e = err(&tampered);
    assert!(matches!(e, OciError::Digest { .. }), "{e}");
    assert!(e.to_string().contains("does not have its digest"), "{e}");

    // manifest.json naming a config the archive lacks.
    let lacking = rewrite(&bytes, |name, data| (name != config).then_some(data));
    let e = err(&lacking);
    assert!(matches!(e, OciError::Missing { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("manifest.json names blobs/sha256/"),
        "{e}"
    );

    // manifest.json that is not JSON.
    let garbled = rewrite(&bytes, |name, data| {
        Some(if name == "manifest.json" {
            b"[{\"Config\": ".to_vec()
        } else {
            data
        })
    });
    let e = err(&garbled);
    assert!(
        e.to_string()
            .starts_with("manifest.json is not what it should be"),
        "{e}"
    );

    let empty = rewrite(&bytes, |name, data| {
        Some(if name == "manifest.json" {
            b"[]".to_vec()
        } else {
            data
        })
    });
    assert!(matches!(err(&empty), OciError::Empty));
}
