//! Apt sources added by profiles (`[[sources]]`): parsing, every validation
//! rule with its located report (golden,
//! `tests/fixtures/check-sources/<rule>.expected`), what `inputs::sources`
//! returns, and a lock against local repositories in which a profile's
//! source wins a package and is recorded as its origin.

mod common;
// pibake-inputs' fixtures: .debs from dpkg-deb, flat repositories, and an
// HTTP server on 127.0.0.1.
#[path = "../../inputs/tests/common/mod.rs"]
mod repo;

use pibake::inputs::{self, LockOutcome};
use pibake::model::{self, Checked, Cluster};
use pibake_inputs::fetch::{self, FetchOptions};
use pibake_inputs::{Sha256, Store};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const FIXTURES: &str = "tests/fixtures/check-sources";

/// A cluster of two roles with one rpi4 node each; `{one}` and `{two}` are
/// their profiles.
const CLUSTER: &str = r#"format = 1

[cluster]
name = "src"
domain = "src.internal"
timezone = "UTC"

[cluster.admin]
user = "admin"

[network]
subnet = "10.9.0.0/24"
gateway = "10.9.0.1"
dns = ["10.9.0.1"]

[roles.one]
profile = "{one}"

[roles.two]
profile = "{two}"

[nodes.n1]
role = "one"
platform = "rpi4"
address = "10.9.0.11"

[nodes.n2]
role = "two"
platform = "rpi4"
address = "10.9.0.12"

[time]
upstream = ["pool.ntp.org"]

[swarm]
managers = ["n1"]
join = "managers"
"#;

fn cluster_text(one: &str, two: &str) -> String {
    CLUSTER.replace("{one}", one).replace("{two}", two)
}

/// Checks a cluster whose roles use profiles `one` and `two` of the fixture
/// directory (given relative, so reports name the profiles relatively).
fn check(one: &str, two: &str) -> Checked {
    common::enter_workspace();
    // Relative to the workspace, so the reports name it relatively too.
    let dir = Path::new("target/check-sources");
    std::fs::create_dir_all(dir).expect("mkdir");
    let file = dir.join(format!("{one}+{two}.toml"));
    // Tests run in parallel and may write the same file: write, then rename.
    let tmp = dir.join(format!("{one}+{two}.{:?}.tmp", std::thread::current().id()));
    std::fs::write(&tmp, cluster_text(one, two)).expect("write cluster");
    std::fs::rename(&tmp, &file).expect("rename cluster");
    model::load_with(
        &file,
        &Path::new(FIXTURES).join("profiles"),
        &Path::new(FIXTURES).join("overlays"),
    )
    .expect("readable")
}

/// A rule: profile `rule` (with `plain`, or the pair `profiles` when given)
/// gives errors; the report says `must_contain`, is located in the (last)
/// profile and matches the golden.
fn check_rule(rule: &str, profiles: Option<(&str, &str)>, must_contain: &str) {
    let (one, two) = profiles.unwrap_or((rule, "plain"));
    let checked = check(one, two);
    let text = checked.report();
    assert!(checked.has_errors(), "{rule}: errors expected\n{text}");
    assert!(checked.cluster.is_none(), "{rule}");
    assert!(
        text.contains(must_contain),
        "{rule}: report lacks `{must_contain}`:\n{text}"
    );
    let located = if profiles.is_some() { two } else { one };
    let profile = format!("{FIXTURES}/profiles/{located}.toml");
    assert!(
        text.contains(&format!("--> {profile}:")),
        "{rule}: the report is not located in {profile}:\n{text}"
    );
    common::golden(Path::new(&format!("{FIXTURES}/{rule}.expected")), &text);
}

fn valid() -> Cluster {
    let checked = check("pi", "plain");
    assert!(!checked.has_errors(), "{}", checked.report());
    checked.cluster.expect("valid")
}

#[test]
fn sources_are_parsed_merged_and_resolved() {
    let cluster = valid();
    let profile = &cluster.roles["one"].profile;
    let names: Vec<&str> = profile.sources.iter().map(|s| s.name.as_str()).collect();
    // Sorted by name; `archive` (from `base` and repeated identically) once.
    assert_eq!(names, ["archive", "local"]);
    let archive = &profile.sources[0];
    assert_eq!(archive.uri, "https://archive.example.org/debian");
    assert_eq!(archive.suite, "trixie");
    assert_eq!(archive.components, ["main"]);
    assert_eq!(archive.pin_priority, Some(990));
    assert!(!archive.trusted);
    let keyring = archive.keyring.as_ref().expect("keyring");
    assert!(keyring.is_absolute(), "{}", keyring.display());
    assert_eq!(
        keyring,
        &common::workspace_root()
            .join(FIXTURES)
            .join("profiles/keys/archive.asc")
    );
    let local = &profile.sources[1];
    assert!(local.trusted && local.keyring.is_none() && local.components.is_empty());
    assert_eq!(
        local.sources_list_line(),
        "deb [trusted=yes] file:/srv/pibake-repo/ ./"
    );
    assert!(cluster.roles["two"].profile.sources.is_empty());
}

#[test]
fn sources_include_the_profiles_after_the_host_mirror() {
    let cluster = valid();
    let host = pibake_inputs::Source::debian("http://mirror.invalid/debian", "trixie", None);
    let all = inputs::with_profile_sources(host, &cluster);
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["debian", "archive", "local"]);
    assert_eq!(all[1..], cluster.roles["one"].profile.sources[..]);
    assert_eq!(
        inputs::source_names(&cluster),
        ["archive", "debian", "local"].map(String::from).into()
    );
    // A role without nodes contributes no sources.
    let mut without = cluster.clone();
    without.nodes.retain(|_, n| n.role != "one");
    assert!(inputs::profile_sources(&without).is_empty());
    assert_eq!(
        inputs::source_names(&without),
        BTreeSet::from(["debian".to_string()])
    );
}

#[test]
fn the_same_source_in_two_profiles_is_listed_once() {
    // `pi` and `base` define `archive` identically; as roles they add it once.
    let checked = check("pi", "base");
    assert!(!checked.has_errors(), "{}", checked.report());
    let cluster = checked.cluster.expect("valid");
    let names: Vec<String> = inputs::profile_sources(&cluster)
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["archive", "local"]);
}

/// One test per rule (`name: "<rule>", <profile pair or None>, "<needle>";`,
/// see [`check_rule`]) and [`RULES`], the rules they check: the goldens of
/// `tests/fixtures/check-sources/` are exactly `<rule>.expected` of these.
macro_rules! rules {
    ($($name:ident: $rule:literal, $profiles:expr, $needle:literal;)*) => {
        $(
            #[test]
            fn $name() {
                check_rule($rule, $profiles, $needle);
            }
        )*

        /// The rules of `tests/fixtures/check-sources/`.
        const RULES: &[&str] = &[$($rule),*];
    };
}

rules! {
    unknown_source_key: "unknown-source-key", None, "did you mean `pin_priority`? keys allowed here: name, uri, suite, components, keyring, trusted, pin_priority";
    missing_source_suite: "missing-source-suite", None, "missing field `suite`";
    bad_source_fields: "bad-source-fields", None, "sources[0].name: `Raspberry Pi` is not a source name";
    unverifiable_source: "unverifiable-source", None, "neither `keyring` nor `trusted = true`";
    missing_keyring: "missing-keyring", None, "keyring `keys/missing.gpg` does not exist";
    reserved_source_name: "reserved-source-name", None, "the source name `debian` is reserved for the host's Debian mirror";
    duplicate_source: "duplicate-source", None, "source `archive` is defined twice in this profile";
    conflicting_sources: "conflicting-sources", Some(("conflict-a", "conflict-b")), "source `archive` is defined differently in tests/fixtures/check-sources/profiles/conflict-a.toml (uri, pin_priority)";
}

#[test]
fn bad_source_fields_are_each_reported() {
    let text = check("bad-source-fields", "plain").report();
    for needle in [
        "sources[1].uri: `ftp://archive.example.org/debian` is not an http://, https:// or file:/ URI",
        "sources[2].components[1]: component `non free`",
        "sources[3].components: suite `./` is a flat repository",
        "sources[4].suite: suite `trixie` needs components",
        "sources[5].pin_priority: pin priority 0 is not one apt accepts",
        "sources[6].pin_priority: pin priority 70000 is not one apt accepts",
        "7 error(s), 0 warning(s)",
    ] {
        assert!(text.contains(needle), "lacks `{needle}`:\n{text}");
    }
}

/// Every report golden beside the source fixtures is a rule's.
#[test]
fn no_stale_source_report_goldens() {
    let generated: BTreeSet<PathBuf> = RULES
        .iter()
        .map(|rule| PathBuf::from(format!("{FIXTURES}/{rule}.expected")))
        .collect();
    common::assert_no_stale_goldens(
        Path::new(FIXTURES),
        false,
        common::is_expected_report,
        &generated,
    );
}

/// A profile that adds `extra` (trusted, pinned 990) to a stand-in for the
/// host's Debian mirror; both serve `pdup`, the stand-in a higher version.
/// The lock records `extra` as `pdup`'s origin, and the profile's sources as
/// the lock's; dropping the source makes the lock stale until updated.
#[test]
fn a_profile_source_wins_and_is_the_locked_origin() -> anyhow::Result<()> {
    use repo::{flat_source, index_repo, make_deb, Pkg, Server};
    let t = tempfile::tempdir()?;
    let (deb, extra) = (t.path().join("deb"), t.path().join("extra"));
    make_deb(
        &deb,
        &Pkg {
            seed: 20,
            ..Pkg::new("pdup", "2.0")
        },
    )?;
    make_deb(
        &extra,
        &Pkg {
            seed: 21,
            ..Pkg::new("pdup", "1.0+vendor1")
        },
    )?;
    // The Pi's boot chain every Pi cluster asks for: `[kernel]` and the firmware.
    for (seed, name) in [(22, "linux-image-arm64"), (23, "raspi-firmware")] {
        make_deb(
            &deb,
            &Pkg {
                seed,
                ..Pkg::new(name, "1.0")
            },
        )?;
    }
    index_repo(&deb, "stand-in-debian", 1_750_000_000)?;
    index_repo(&extra, "extra", 1_750_000_100)?;
    let server = Server::start(t.path())?;
    let host = flat_source("debian", &server, "deb");
    let extra_hash = Sha256::of(&std::fs::read(extra.join("pdup_1.0+vendor1_arm64.deb"))?);

    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("profiles"))?;
    std::fs::create_dir_all(data.join("overlays"))?;
    std::fs::create_dir_all(data.join("lab"))?;
    let source = format!(
        "\n[[sources]]\nname = \"extra\"\nuri = \"{}/extra\"\nsuite = \"./\"\ntrusted = true\npin_priority = 990\n",
        server.url()
    );
    let profile = "format = 1\npackages = [\"pdup\"]\n";
    let write_profiles = |with_source: bool| -> std::io::Result<()> {
        let text = if with_source {
            format!("{profile}{source}")
        } else {
            profile.to_string()
        };
        std::fs::write(data.join("profiles/pi.toml"), text)?;
        std::fs::write(data.join("profiles/other.toml"), "format = 1\n")
    };
    let cluster_file = data.join("lab/cluster.toml");
    std::fs::write(&cluster_file, cluster_text("pi", "other"))?;
    let load = || -> anyhow::Result<Cluster> {
        let checked = model::load_with(
            &cluster_file,
            &data.join("profiles"),
            &data.join("overlays"),
        )?;
        assert!(!checked.has_errors(), "{}", checked.report());
        Ok(checked.cluster.expect("valid"))
    };
    let store = Store::open(t.path().join("store"))?;
    let stand_in = |_: &Cluster| Ok(host.clone());

    write_profiles(true)?;
    let cluster = load()?;
    let LockOutcome::Written(lock) = inputs::lock_with_host(&cluster, &store, false, stand_in)?
    else {
        panic!("no lock was written");
    };
    let pdup = locked(&lock, "pdup");
    assert_eq!((pdup.origin.as_str(), pdup.sha256), ("extra", extra_hash));
    assert_eq!(
        lock.closures[0].sources,
        ["debian", "extra"].map(String::from).into()
    );
    assert_eq!(inputs::read_lock(&cluster)?, lock);
    // The winner is fetched from the profile's source.
    let options = FetchOptions {
        progress: false,
        ..FetchOptions::default()
    };
    fetch::fetch(
        &lock,
        &inputs::with_profile_sources(host.clone(), &cluster),
        &store,
        &options,
    )?;
    assert!(store.contains(&pdup.entry_name()?));

    // Without the source the lock is stale: read_lock (what build uses)
    // refuses it, `pibake lock` resolves the stale closure again against the
    // stand-in alone, and then keeps it.
    write_profiles(false)?;
    let cluster = load()?;
    let stale = inputs::read_lock(&cluster).expect_err("stale lock accepted");
    let message = format!("{:#}", anyhow::Error::from(stale));
    assert!(message.contains("pibake lock --update"), "{message}");
    let LockOutcome::Written(lock) = inputs::lock_with_host(&cluster, &store, false, stand_in)?
    else {
        panic!("the stale closure was not resolved again");
    };
    assert!(matches!(
        inputs::lock_with_host(&cluster, &store, false, stand_in)?,
        LockOutcome::Kept(_)
    ));
    let pdup = locked(&lock, "pdup");
    assert_eq!(
        (pdup.origin.as_str(), pdup.version.as_str()),
        ("debian", "2.0")
    );
    assert_eq!(
        lock.closures[0].sources,
        BTreeSet::from(["debian".to_string()])
    );
    Ok(())
}

/// The locked package `name`.
fn locked<'a>(lock: &'a pibake_inputs::Lock, name: &str) -> &'a pibake_inputs::lock::LockedPackage {
    lock.packages()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the lock"))
}
