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
    let options_of = |run: &str| BuildOptions {
        out_dir: data.join(format!("out-{run}")),
        work_dir: data.join(format!("work-{run}")),
        agents: agents.clone(),
        dtbo_dir: data.join("overlays/dtbo"),
        progress: false,
        substituter: None,
    };
    for run in ["a", "b"] {
        let store = inputs::open_store(Some(&data.join(format!("store-{run}")))).expect("store");
        // The first run writes the lock; the second keeps it (same lock).
        inputs::lock(&cluster, &store, false).expect("lock");
        let lock = inputs::read_lock(&cluster).expect("lock");
        inputs::fetch(&cluster, &lock, &store, false, false).expect("fetch");
        let info = LockInfo::read(&cluster_file).expect("lock info");
        let plan = plan::plan(&cluster, &info, &Selection::default()).expect("plan");
        let options = options_of(run);
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
    a_node_change_reuses_the_root(&cluster, &cluster_file, data, &options_of);
}

/// After tiny1's address changes, store a builds the image around its stored root
/// partition, whose bytes stay as they were; store b, its root partition forgotten, builds
/// the same inputs from scratch: the two images are the same bytes.
fn a_node_change_reuses_the_root(
    cluster: &model::Cluster,
    cluster_file: &Path,
    data: &Path,
    options_of: &dyn Fn(&str) -> BuildOptions,
) {
    let mut changed = cluster.clone();
    let node = changed.nodes.get_mut("tiny1").expect("tiny1");
    node.address = "10.9.0.12".parse().expect("address");
    let info = LockInfo::read(cluster_file).expect("lock info");
    let plan = plan::plan(&changed, &info, &Selection::default()).expect("plan");
    let before = plan::plan(cluster, &info, &Selection::default()).expect("plan");
    assert_eq!(plan.images[0].root_hash, before.images[0].root_hash);
    assert_ne!(plan.images[0].input_hash, before.images[0].input_hash);
    let lock = inputs::read_lock(&changed).expect("lock");
    let mut images = Vec::new();
    for run in ["a", "b"] {
        let store = inputs::open_store(Some(&data.join(format!("store-{run}")))).expect("store");
        let parts = stored_root_parts(&store);
        assert_eq!(
            parts.len(),
            1,
            "store {run}: one stored root partition: {parts:?}"
        );
        if run == "b" {
            for pointer in std::fs::read_dir(store.root().join("stages")).expect("stages") {
                let pointer = pointer.expect("entry").path();
                if pointer
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("rootpart-"))
                {
                    std::fs::remove_file(pointer).expect("forget the root partition");
                }
            }
        }
        let built = build::build(&changed, &plan, &lock, &store, &options_of(run)).expect("build");
        assert!(!built[0].cached, "run {run}: the node table changed");
        assert_eq!(
            built[0].root_stored,
            run == "a",
            "run {run}: root partition reuse"
        );
        if run == "a" {
            assert_eq!(
                stored_root_parts(&store),
                parts,
                "the stored root partition changed"
            );
            per_node_images_share_the_root(
                &changed,
                &info,
                &lock,
                &store,
                &built[0].img,
                options_of,
            );
        }
        let table = read_fat_table(&built[0].img);
        assert!(
            table.contains("10.9.0.12"),
            "the new address is not in the table:\n{table}"
        );
        let manifest = options_of(run)
            .out_dir
            .join(format!("{}.manifest.json", built[0].name));
        let manifest = std::fs::read_to_string(manifest).expect("the manifest");
        images.push((sha256(&built[0].img), built[0].sha256.clone(), manifest));
    }
    let (a, b) = (&images[0], &images[1]);
    assert_eq!(
        (&a.0, &a.1),
        (&b.0, &b.1),
        "the image around the stored root differs from scratch"
    );
    // The root's manifest entries come from the stored part: the same list as from scratch.
    assert!(a.2 == b.2, "the manifests differ:\n{}\n{}", a.2, b.2);
}

/// The per-node image of tiny1 is built around the role image's stored root: its root
/// partition is the role image's, byte for byte, and no new part is stored.
fn per_node_images_share_the_root(
    cluster: &model::Cluster,
    info: &LockInfo,
    lock: &pibake_inputs::Lock,
    store: &pibake_inputs::Store,
    role_img: &Path,
    options_of: &dyn Fn(&str) -> BuildOptions,
) {
    let per_node = Selection {
        per_node: true,
        ..Selection::default()
    };
    let plan = plan::plan(cluster, info, &per_node).expect("plan");
    let before = stored_root_parts(store);
    let built =
        build::build(cluster, &plan, lock, store, &options_of("a-per-node")).expect("build");
    assert_eq!(built.len(), 1);
    assert!(
        built[0].root_stored,
        "the per-node image made a root of its own"
    );
    assert_eq!(stored_root_parts(store), before);
    assert_ne!(built[0].img, role_img);
    assert_eq!(root_region(&built[0].img), root_region(role_img));
}

/// The sha256 of an MBR image's partition 2.
fn root_region(img: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(img).expect("image");
    let le =
        |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    let (start, len) = (le(470) * 512, le(474) * 512);
    hex::encode(sha2::Sha256::digest(&bytes[start..start + len]))
}

/// Each stored root partition's entry name with its bytes' sha256 and modification time.
fn stored_root_parts(store: &pibake_inputs::Store) -> Vec<(String, String, std::time::SystemTime)> {
    let mut parts: Vec<_> = std::fs::read_dir(store.root())
        .expect("store")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".ext4"))
        .map(|p| {
            let mtime = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .expect("mtime");
            (p.display().to_string(), sha256(&p), mtime)
        })
        .collect();
    parts.sort();
    parts
}

/// The node table on the image's FAT partition (MBR partition 1), read with mtools.
fn read_fat_table(img: &Path) -> String {
    let bytes = std::fs::read(img).expect("image");
    let start = u64::from(u32::from_le_bytes(
        bytes[454..458].try_into().expect("4 bytes"),
    )) * 512;
    let out = std::process::Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@{start}", img.display()))
        .arg("::pibake-nodes.toml")
        .output()
        .expect("mtype runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
