//! An installed pibake works without the checkout it was built from: its
//! profiles and overlays are built into it (src/data.rs), and they give the
//! same plan as the checkout's.

mod common;

use pibake::data::{self, DataDir, DataOrigin};
use pibake::model;
use pibake::plan::{self, LockInfo, Plan, Selection};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// Every input hash of a plan, by what it names (no paths).
fn hashes(plan: &Value) -> Vec<(String, String)> {
    let mut out = vec![(
        "lock".to_string(),
        plan["lock"]["digest"]
            .as_str()
            .unwrap_or("none")
            .to_string(),
    )];
    for (id, stage) in plan["rootfs"].as_object().expect("rootfs stages") {
        out.push((format!("rootfs {id}"), stage["input_hash"].to_string()));
    }
    for image in plan["images"].as_array().expect("images") {
        let name = image["name"].as_str().expect("name");
        for key in ["input_hash", "layers_hash", "rootfs"] {
            out.push((format!("{name} {key}"), image[key].to_string()));
        }
    }
    out
}

fn plan_of(cluster_file: &Path, data: &DataDir, selection: &Selection) -> Value {
    let checked = model::load_from(cluster_file, data).expect("readable");
    assert!(!checked.has_errors(), "{}", checked.report());
    let cluster = checked.cluster.expect("valid");
    let lock = LockInfo::read(cluster_file).expect("lock");
    let plan: Plan = plan::plan(&cluster, &lock, selection).expect("plan");
    serde_json::to_value(&plan).expect("json")
}

/// The library-level half, fast: the embedded data gives the checkout's
/// input hashes, for role and per-node images (no host path reaches a hash).
#[test]
fn embedded_data_plans_like_the_checkout() {
    let root = common::workspace_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let embedded = DataDir {
        path: data::unpack_embedded(&tmp.path().join("store")).expect("unpack"),
        origin: DataOrigin::Embedded,
    };
    let checkout = DataDir {
        path: root.clone(),
        origin: DataOrigin::ClusterTree,
    };
    let copy = common::copy_lab(&tmp.path().join("lab"));
    for selection in [
        Selection::default(),
        Selection {
            per_node: true,
            ..Selection::default()
        },
    ] {
        let here = plan_of(
            &root.join("examples/lab/cluster.toml"),
            &checkout,
            &selection,
        );
        let there = plan_of(&copy, &embedded, &selection);
        assert_eq!(hashes(&here), hashes(&there));
        assert!(hashes(&here).len() > 4);
    }
}

fn pibake_in_checkout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pibake"))
        .args(args)
        .current_dir(common::workspace_root())
        .env_remove(data::DATA_DIR_ENV)
        .output()
        .expect("run pibake")
}

fn ok(what: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what}: {}\n{stderr}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// Whether this test can hide the checkout in a mount namespace of its own
/// (root, and a kernel that lets us unshare).
fn can_hide() -> bool {
    Command::new("unshare")
        .args(["-m", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The issue's test: `cargo install --path builder --root T`, then
/// `T/bin/pibake check` and `plan` on a copy of the lab outside the
/// checkout, with the checkout gone. Renaming the shared checkout away is
/// not an option here, so each command runs in a mount namespace where an
/// empty tmpfs covers the checkout (the same to the binary as a rename);
/// without root it runs with the checkout in place, outside it, and still
/// asserts the data came from the embedded copy.
#[test]
fn installed_binary_checks_and_plans_the_lab_outside_the_checkout() {
    let root = common::workspace_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    assert!(
        !tmp.path().starts_with(&root),
        "the temporary directory must lie outside the checkout"
    );
    // The shared target directory (the one this test was built in), so the
    // install reuses its artifacts instead of compiling from scratch.
    let target_dir = Path::new(env!("CARGO_BIN_EXE_pibake"))
        .ancestors()
        .nth(2)
        .expect("target dir")
        .to_path_buf();
    let install_root = tmp.path().join("install");
    let install = Command::new(env!("CARGO"))
        .args(["install", "--locked", "--offline", "--debug", "--no-track"])
        .arg("--path")
        .arg(root.join("builder"))
        .arg("--root")
        .arg(&install_root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(tmp.path())
        .output()
        .expect("run cargo install");
    ok("cargo install", &install);
    let bin = install_root.join("bin/pibake");
    assert!(bin.is_file(), "{} missing", bin.display());

    let lab = common::copy_lab(&tmp.path().join("lab"));
    let lab_dir = lab.parent().expect("lab dir").to_path_buf();
    let store = tmp.path().join("store");
    let hide = can_hide();
    if !hide {
        eprintln!("note: cannot unshare a mount namespace here; the checkout stays visible");
    }
    let installed = |args: &[&str]| -> Output {
        let mut command = if hide {
            let mut c = Command::new("unshare");
            // An empty tmpfs over the checkout, checked to be empty, then pibake.
            c.args([
                "-m",
                "sh",
                "-c",
                r#"mount -t tmpfs -o size=1m pibake-hidden "$1" && test ! -e "$1/Cargo.toml" && shift && exec "$@""#,
                "sh",
            ])
            .arg(&root)
            .arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        command
            .arg("--store")
            .arg(&store)
            .args(args)
            .current_dir(&lab_dir)
            .env_remove(data::DATA_DIR_ENV)
            .env_remove(data::AGENT_ENV)
            .env("XDG_CACHE_HOME", tmp.path().join("cache"))
            .env("HOME", tmp.path().join("home"))
            .output()
            .expect("run the installed pibake")
    };

    let embedded_dir = data::embedded_dir(&store);
    let used = format!(
        "profiles and overlays: {} (built into pibake)",
        embedded_dir.display()
    );
    let stderr = ok("installed pibake check", &installed(&["check"]));
    assert!(stderr.contains(&used), "expected `{used}` in\n{stderr}");
    assert!(stderr.contains("cluster.toml: ok"), "{stderr}");
    assert!(embedded_dir.join("profiles/worker.toml").is_file());
    assert!(embedded_dir
        .join("overlays/dtbo/gpio-shutdown.dts")
        .is_file());

    for extra in [&[][..], &["--per-node"][..]] {
        let there = installed(&[&["plan", "--json"][..], extra].concat());
        let stderr = ok("installed pibake plan", &there);
        assert!(stderr.contains(&used), "expected `{used}` in\n{stderr}");
        let here = pibake_in_checkout(
            &[
                &["plan", "--json", "-c", "examples/lab/cluster.toml"][..],
                extra,
            ]
            .concat(),
        );
        let here_stderr = ok("pibake plan in the checkout", &here);
        assert!(
            here_stderr.contains("(found above the cluster file)"),
            "{here_stderr}"
        );
        let json = |o: &Output| -> Value { serde_json::from_slice(&o.stdout).expect("plan JSON") };
        assert_eq!(hashes(&json(&here)), hashes(&json(&there)), "{extra:?}");
    }
}
