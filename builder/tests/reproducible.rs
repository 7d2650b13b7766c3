//! Reproducibility of the whole pipeline on a small image: lock the
//! Essential/required set from the host's Debian mirror, then fetch, rootfs
//! stage (mmdebstrap under qemu-user) and assembly twice, from two empty
//! stores; the rootfs tars and the images must be byte-identical. The agent
//! comes from PIBAKE_AGENT_BIN (`cargo xtask test` builds it).

mod common;

use pibake::build::{self, BuildOptions};
use pibake::inputs;
use pibake::model;
use pibake::plan::{self, LockInfo, Selection};
use std::path::Path;

/// The tiny cluster, shared with `cargo xtask fresh-root`.
const CLUSTER: &str = include_str!("../../tests/fixtures/tiny/cluster.toml");

const PROFILE: &str = include_str!("../../tests/fixtures/tiny/profile.toml");

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).expect("readable");
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The agents of PIBAKE_AGENT_BIN (paths separated by `:`), else the
/// checkout's; the tiny image needs the arm64 one.
fn agents() -> pibake::data::Agents {
    let checkout = pibake::data::DataDir {
        path: common::workspace_root(),
        origin: pibake::data::DataOrigin::ClusterTree,
    };
    let env = std::env::var_os(pibake::data::AGENT_ENV);
    let agents = pibake::data::agents(vec![], env, &checkout).unwrap_or_else(|e| panic!("{e}"));
    if let Err(error) = agents.get("arm64") {
        panic!("{error} (cargo xtask test builds them)");
    }
    agents
}

#[test]
fn small_image_is_reproducible_from_two_empty_stores() {
    let agents = agents();
    let root = common::workspace_root();
    let tmp = tempfile::tempdir_in(root.join("target")).expect("tempdir");
    let data = tmp.path();
    std::fs::create_dir_all(data.join("profiles")).expect("mkdir");
    std::fs::create_dir_all(data.join("overlays/fake-kernel/root/boot/firmware")).expect("mkdir");
    std::fs::create_dir_all(data.join("tiny")).expect("mkdir");
    for overlay in ["gpio-shutdown", "static-net", "dtbo"] {
        std::os::unix::fs::symlink(
            root.join("overlays").join(overlay),
            data.join("overlays").join(overlay),
        )
        .expect("symlink");
    }
    std::fs::write(
        data.join("overlays/fake-kernel/root/boot/firmware/vmlinuz-0.0.0-test"),
        b"not a kernel\n",
    )
    .expect("write");
    std::fs::write(data.join("profiles/tiny.toml"), PROFILE).expect("write");
    let cluster_file = data.join("tiny/cluster.toml");
    std::fs::write(&cluster_file, CLUSTER).expect("write");

    let checked = model::load(&cluster_file).expect("readable");
    assert!(!checked.has_errors(), "{}", checked.report());
    let cluster = checked.cluster.expect("valid");

    let mut results = Vec::new();
    for run in ["a", "b"] {
        let store = inputs::open_store(Some(&data.join(format!("store-{run}")))).expect("store");
        // The first run writes the lock; the second keeps it (same lock).
        inputs::lock(&cluster, &store, false).expect("lock");
        let lock = inputs::read_lock(&cluster).expect("lock");
        inputs::fetch(&cluster, &lock, &store, false, false).expect("fetch");
        let info = LockInfo::read(&cluster_file).expect("lock info");
        let plan = plan::plan(&cluster, &info, &Selection::default()).expect("plan");
        let options = BuildOptions {
            out_dir: data.join(format!("out-{run}")),
            work_dir: data.join(format!("work-{run}")),
            agents: agents.clone(),
            dtbo_dir: data.join("overlays/dtbo"),
            progress: false,
        };
        let built = match build::build(&cluster, &plan, &lock, &store, &options) {
            Ok(built) => built,
            Err(error) => {
                // Show mmdebstrap's log: the temp dir is gone after the panic.
                let logs: String = std::fs::read_dir(&options.work_dir)
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                            .map(|t| {
                                t.lines()
                                    .rev()
                                    .take(40)
                                    .collect::<Vec<_>>()
                                    .into_iter()
                                    .rev()
                                    .collect::<Vec<_>>()
                                    .join("\n")
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                panic!("build {run}: {error:?}\n{logs}");
            }
        };
        assert_eq!(built.len(), 1);
        assert!(!built[0].cached, "run {run} must build from scratch");
        let stage = plan.rootfs.values().next().expect("one rootfs stage");
        let tar = pibake::rootfs::cached(&store, stage).expect("rootfs stored");
        let sbom = options.out_dir.join(format!("{}.spdx.json", built[0].name));
        let sbom = std::fs::read_to_string(&sbom).expect("the SBOM beside the image");
        let sha = &built[0].sha256;
        assert!(
            sbom.contains(&format!("\"checksumValue\": \"{sha}\"")),
            "the SBOM does not name the image's sha256 {sha}:\n{sbom}"
        );
        results.push((sha256(&tar), sha256(&built[0].img), sha.clone(), sbom));
    }
    let (a, b) = (&results[0], &results[1]);
    assert_eq!(a.0, b.0, "rootfs tars differ between two empty stores");
    assert_eq!(a.1, b.1, "images differ between two empty stores");
    assert_eq!(a.1, a.2, "the reported sha256 is not the image's");
    assert_eq!(a.3, b.3, "SBOMs differ between two empty stores");
}
