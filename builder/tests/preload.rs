//! Preloaded images end to end on the builder's side: the lab's plan carries
//! the web archive in the arm64 images that run Docker (by its lock pin, in
//! their input hashes), never in the amd64 masters'; the masters' stack is
//! deployed without resolving its image; the lab's web stack runs on the
//! workers only (by the engine label each image's daemon.json gives); and an
//! archive that changed since the lock is refused, located, by `fetch` and
//! `build --offline`, until `pibake lock` pins it again.

mod common;

use pibake::model::{self, Cluster};
use pibake::plan::{self, LockInfo, Selection};
use pibake::render::EntryKind;
use pibake::spec::ImageSpec;
use std::path::Path;
use std::process::Command;

fn lab() -> Cluster {
    common::enter_workspace();
    let checked = model::load(Path::new("examples/lab/cluster.toml")).expect("lab readable");
    assert!(!checked.has_errors(), "{}", checked.report());
    checked.cluster.expect("lab is valid")
}

fn lab_lock() -> LockInfo {
    LockInfo::read(Path::new("examples/lab/cluster.toml")).expect("lock info")
}

fn specs(cluster: &Cluster, lock: &LockInfo) -> Vec<(ImageSpec, String)> {
    plan::plan(cluster, lock, &Selection::default())
        .expect("plan")
        .images
        .into_iter()
        .map(|i| (i.spec, i.input_hash.to_string()))
        .collect()
}

/// The archive entry of a spec, if it carries one: (layer, mode, store entry, size).
fn archive(spec: &ImageSpec) -> Option<(String, u32, String, u64)> {
    spec.layers.iter().find_map(|layer| {
        layer.entries.iter().find_map(|e| match &e.kind {
            EntryKind::Stored { entry, size } if e.path == "var/lib/pibake/images/web.tar" => {
                Some((layer.overlay.clone(), e.mode, entry.clone(), *size))
            }
            _ => None,
        })
    })
}

#[test]
fn the_arm64_docker_images_carry_the_web_archive_by_its_pin() {
    let cluster = lab();
    let lock = lab_lock();
    let pin = &lock.images["web"];
    let entry = pin.entry_name().expect("entry").to_string();
    assert!(entry.starts_with(&pin.sha256.to_string()), "{entry}");
    for (spec, _) in specs(&cluster, &lock) {
        let carried = archive(&spec);
        let table = &spec.node_table.swarm;
        match spec.role.as_str() {
            "worker" | "aux" => {
                assert_eq!(
                    carried,
                    Some(("images".into(), 0o644, entry.clone(), pin.size)),
                    "{}",
                    spec.name
                );
                assert_eq!(table.images, ["web"], "{}", spec.name);
                // The images layer is the last: the node table is no layer (it goes to
                // the boot partition).
                let last = spec.layers.last().expect("layers");
                assert_eq!(last.overlay, "images", "{}", spec.name);
            }
            "master" => {
                assert_eq!(
                    carried, None,
                    "the amd64 masters cannot run the arm64 image"
                );
                assert!(table.images.is_empty());
                // The masters deploy the stack, without resolving its preloaded image.
                assert_eq!(table.stacks, ["web"]);
                assert_eq!(table.preloaded_stacks, ["web"]);
            }
            other => panic!("a role the lab does not have: {other}"),
        }
        if spec.role != "master" {
            assert!(table.stacks.is_empty() && table.preloaded_stacks.is_empty());
        }
    }
}

/// The pin is in the input hashes of the images that carry the archive, and
/// only theirs; another architecture moves the archive to the masters.
#[test]
fn the_pin_is_hashed_into_the_images_that_carry_it() {
    let cluster = lab();
    let lock = lab_lock();
    let before = specs(&cluster, &lock);
    let mut moved = lock.clone();
    let web = moved.images.get_mut("web").expect("web");
    web.sha256 = pibake_inputs::Sha256::of(b"another archive");
    let after = specs(&cluster, &moved);
    for ((a, hash_a), (b, hash_b)) in before.iter().zip(&after) {
        let carries = b.role != "master";
        assert_eq!(hash_a != hash_b, carries, "{}", b.name);
        assert_eq!(a == b, !carries, "{}", b.name);
    }

    let mut amd64 = cluster.clone();
    amd64.swarm.images.get_mut("web").expect("web").arch = "amd64".into();
    let mut amd64_lock = lock.clone();
    amd64_lock.images.get_mut("web").expect("web").architecture = "amd64".into();
    for (spec, _) in specs(&amd64, &amd64_lock) {
        assert_eq!(
            archive(&spec).is_some(),
            spec.role == "master",
            "{}",
            spec.name
        );
    }
    // A lock that pins it for another architecture than the archive's is no pin.
    let err = plan::plan(&amd64, &lock, &Selection::default()).expect_err("stale pin");
    assert!(err.to_string().contains("run `pibake lock`"), "{err}");
}

#[test]
fn a_plan_without_the_pin_says_to_lock() {
    let cluster = lab();
    let mut lock = lab_lock();
    lock.images.clear();
    let err = plan::plan(&cluster, &lock, &Selection::default()).expect_err("no pin");
    assert_eq!(
        err.to_string(),
        "examples/lab/pibake.lock: no pin for the image archive `web`; run `pibake lock`"
    );
}

fn yaml(path: &str) -> yaml_serde::Value {
    yaml_serde::from_str(&std::fs::read_to_string(path).expect(path)).expect("yaml")
}

/// The lab's web stack: the preloaded image by its tag, the node's hostname,
/// port 80 through the routing mesh, on every worker and nowhere else: its
/// constraint names the engine label the worker image's daemon.json sets, and
/// which the aux image (a Swarm worker too: the GPS node) sets otherwise.
#[test]
fn the_web_stack_runs_on_the_workers_only() {
    let cluster = lab();
    let lock = lab_lock();
    let compose = yaml("examples/lab/stacks/web.yml");
    let web = &compose["services"]["web"];
    let image = web["image"].as_str().expect("an image");
    assert_eq!(
        lock.images["web"].tags,
        [image],
        "the stack names the preloaded tag"
    );
    assert_eq!(cluster.swarm.images["web"].tags, [image]);
    assert_eq!(web["hostname"].as_str(), Some("{{.Node.Hostname}}"));
    let port = &web["ports"][0];
    assert_eq!(
        (
            port["target"].as_u64(),
            port["published"].as_u64(),
            port["mode"].as_str()
        ),
        (Some(80), Some(80), Some("ingress"))
    );
    assert_eq!(web["deploy"]["mode"].as_str(), Some("global"));
    let constraints: Vec<&str> = web["deploy"]["placement"]["constraints"]
        .as_sequence()
        .expect("constraints")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(constraints, ["engine.labels.pibake.role == worker"]);
    for (spec, _) in specs(&cluster, &lock) {
        let daemon = spec
            .layers
            .iter()
            .flat_map(|l| &l.entries)
            .find(|e| e.path == "etc/docker/daemon.json")
            .expect("every Swarm image configures its engine");
        let EntryKind::File(bytes) = &daemon.kind else {
            panic!("daemon.json is a file");
        };
        let json: serde_json::Value = serde_json::from_slice(bytes).expect("daemon.json is JSON");
        let labels = json["labels"].as_array().expect("labels");
        assert_eq!(labels.len(), 1, "{}", spec.name);
        let label = labels[0].as_str().expect("a string");
        assert_eq!(label, format!("pibake.role={}", spec.role));
        assert_eq!(
            label == "pibake.role=worker",
            spec.role == "worker",
            "only the workers' engines match the stack's constraint ({})",
            spec.name
        );
    }
}

fn pibake(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pibake"))
        .args(args)
        .env("PIBAKE_DATA_DIR", common::workspace_root())
        .output()
        .expect("run pibake");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `fetch` and `build --offline` put the archive into the store under its pin;
/// changed since the lock, it is refused where the cluster file names it,
/// before anything is built, until `pibake lock` pins it again.
#[test]
fn a_changed_archive_is_refused_located_until_it_is_locked_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster_file = common::copy_lab(&tmp.path().join("lab"));
    let cluster = cluster_file.display().to_string();
    let store = tmp.path().join("store");
    let store = store.display().to_string();
    let lock = pibake_inputs::Lock::read(&tmp.path().join("lab/pibake.lock")).expect("lock");
    let pin = lock.image("web").expect("pinned").clone();
    let entry = Path::new(&store).join(pin.entry_name().expect("entry").to_string());

    // Offline, the packages are missing from the empty store, but the archive
    // (a local file) is stored under its pin first.
    let (ok, stderr) = pibake(&["--offline", "--store", &store, "fetch", "-c", &cluster]);
    assert!(!ok && stderr.contains("offline"), "{stderr}");
    assert_eq!(
        std::fs::read(&entry).expect("stored under the pin"),
        std::fs::read(tmp.path().join("lab/oci/web-arm64.tar")).expect("archive")
    );

    // The archive changes (a byte after its end: still an archive to `check`).
    let archive = tmp.path().join("lab/oci/web-arm64.tar");
    let mut bytes = std::fs::read(&archive).expect("archive");
    bytes.extend_from_slice(&[0; 512]);
    std::fs::write(&archive, &bytes).expect("write");
    let line = std::fs::read_to_string(&cluster_file)
        .expect("cluster")
        .lines()
        .position(|l| l.starts_with("archive = "))
        .expect("the archive line")
        + 1;
    let located = format!("{cluster}:{line}:11: swarm.images.web.archive: `oci/web-arm64.tar` changed since it was locked");
    for command in [&["fetch"][..], &["build", "--out", "never-built"][..]] {
        // With the pinned entry in the store, and without it.
        for stored in [true, false] {
            if !stored {
                let _ = std::fs::remove_file(&entry);
            }
            let mut args = vec!["--offline", "--store", &store];
            args.extend(command);
            args.extend(["-c", &cluster]);
            let (ok, stderr) = pibake(&args);
            assert!(!ok, "{command:?} accepted a changed archive");
            assert!(
                stderr.contains(&located),
                "{command:?} (stored: {stored}):\n{stderr}"
            );
            assert!(
                stderr.contains(&format!("pins {} ({} bytes)", pin.sha256, pin.size))
                    && stderr.contains("run `pibake lock`"),
                "{stderr}"
            );
            assert!(!tmp.path().join("lab/never-built").exists());
        }
    }

    // `pibake lock` (offline: the closures still serve) pins it again, and the
    // archive is no longer what stops a fetch.
    let (ok, stderr) = pibake(&["--offline", "--store", &store, "lock", "-c", &cluster]);
    assert!(ok, "{stderr}");
    let relocked = pibake_inputs::Lock::read(&tmp.path().join("lab/pibake.lock")).expect("lock");
    let new_pin = relocked.image("web").expect("pinned");
    assert_eq!(new_pin.size, pin.size + 512);
    assert_eq!(
        relocked.closures, lock.closures,
        "the closures stay as they were"
    );
    let (ok, stderr) = pibake(&["--offline", "--store", &store, "fetch", "-c", &cluster]);
    assert!(!ok && !stderr.contains("changed since"), "{stderr}");
    assert!(Path::new(&store)
        .join(new_pin.entry_name().expect("entry").to_string())
        .is_file());
}
