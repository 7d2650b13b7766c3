//! The cache against a real registry (Debian's docker-registry on loopback): a push and its
//! repeat, a pull into an empty store, and every refusal: an untrusted or unsigned stage, a
//! tampered or truncated blob, an item that is not what the lock pins; and a pull killed with
//! SIGKILL, which leaves no entry and is resumed by the next pull.

use anyhow::{bail, ensure, Context, Result};
use pibake_cache::artifact::{self, Config, EntryRef, Item, Statement, CONFIG_VERSION};
use pibake_cache::testing::Registry;
use pibake_cache::{pull, push, Cache, CacheError, Credentials, KeyName, Puller, SecretKey};
use pibake_inputs::{EntryName, StageOutput, Store};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Deterministic bytes that do not compress to nothing.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// A store as a build leaves it: a locked .deb, a rootfs stage (one tar) and a root
/// partition stage (record, sparse ext4, zstd frame).
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    deb: EntryName,
    stages: Vec<StageOutput>,
}

fn fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("store"))?;
    let deb = store.insert_reader("zlib1g_1.3_arm64.deb", None, &pattern(3 << 20, 1)[..])?;
    let tar = store.insert_reader("lab-rootfs.tar", None, &pattern(5 << 20, 2)[..])?;
    let hash_a = "a1".repeat(32);
    store.set_stage_pointer("rootfs", &hash_a, &tar)?;
    // 32 MiB with data only at both ends: the holes must survive the round trip.
    let mut sparse = vec![0u8; 32 << 20];
    sparse[..4096].copy_from_slice(&pattern(4096, 3));
    sparse[(32 << 20) - 4096..].copy_from_slice(&pattern(4096, 4));
    let ext4 = store.insert_reader("root-ab.ext4", None, &sparse[..])?;
    let zst = store.insert_reader("root-ab.ext4.zst", None, &pattern(1 << 20, 5)[..])?;
    let record = store.insert_reader("root-ab.json", None, format!("{ext4} {zst}").as_bytes())?;
    let hash_b = "b2".repeat(32);
    store.set_stage_pointer("rootpart", &hash_b, &record)?;
    let stages = vec![
        StageOutput {
            kind: "rootfs".into(),
            input_hash: hash_a,
            entries: vec![tar],
        },
        StageOutput {
            kind: "rootpart".into(),
            input_hash: hash_b,
            entries: vec![record, ext4, zst],
        },
    ];
    Ok(Fixture {
        _dir: dir,
        store,
        deb,
        stages,
    })
}

fn key(name: &str) -> Result<SecretKey> {
    Ok(SecretKey::generate(KeyName::new(name).context("name")?)?)
}

fn cache(registry: &Registry, repo: &str) -> Result<Cache> {
    Ok(Cache::open(&registry.url(repo), Credentials::default())?)
}

fn puller(registry: &Registry, repo: &str, trusted: &SecretKey) -> Result<Puller> {
    Ok(Puller {
        cache: cache(registry, repo)?,
        trusted: vec![trusted.public()],
    })
}

fn stage_keys(f: &Fixture) -> Vec<(String, String)> {
    f.stages
        .iter()
        .map(|s| (s.kind.clone(), s.input_hash.clone()))
        .collect()
}

fn size(store: &Store, e: &EntryName) -> Result<u64> {
    Ok(std::fs::metadata(store.path_of(e))?.len())
}

/// The store holds no entry and no stage pointer.
fn ensure_empty(store: &Store) -> Result<()> {
    let entries = store.entries()?;
    ensure!(entries.is_empty(), "entries were stored: {entries:?}");
    let pointers = store.stage_pointers()?;
    ensure!(
        pointers.is_empty(),
        "stage pointers were written: {pointers:?}"
    );
    Ok(())
}

fn quiet(_: &str) {}

#[test]
fn push_is_idempotent_and_an_empty_store_pulls_it_all() -> Result<()> {
    let registry = Registry::start()?;
    let f = fixture()?;
    let k = key("lab-ci-1")?;
    let c = cache(&registry, "pibake/cache")?;
    let push_all = || {
        push(
            &c,
            &f.store,
            std::slice::from_ref(&f.deb),
            &f.stages,
            Some(&k),
            &quiet,
        )
    };
    let first = push_all()?;
    ensure!(
        (first.pushed, first.present, first.blobs_sent) == (3, 0, 5),
        "first push: {first:?}"
    );
    let again = push_all()?;
    ensure!(
        (
            again.pushed,
            again.present,
            again.blobs_sent,
            again.bytes_sent
        ) == (0, 3, 0, 0),
        "a second push sent something: {again:?}"
    );
    eprintln!("PUSH first {first:?}; again {again:?}");

    let dir = tempfile::tempdir()?;
    let empty = Store::open(dir.path())?;
    let p = puller(&registry, "pibake/cache", &k)?;
    let locked = [(f.deb.clone(), size(&f.store, &f.deb)?)];
    let r = pull(&p, &empty, &locked, &stage_keys(&f), &quiet)?;
    ensure!((r.pulled, r.absent) == (3, 0), "pull: {r:?}");
    let mut want: Vec<EntryName> = f.stages.iter().flat_map(|s| s.entries.clone()).collect();
    want.push(f.deb.clone());
    want.sort();
    ensure!(empty.entries()? == want, "pulled {:?}", empty.entries()?);
    ensure!(
        empty.verify()?.corrupt.is_empty(),
        "a pulled entry is corrupt"
    );
    for s in &f.stages {
        ensure!(
            empty.stage_entry(&s.kind, &s.input_hash).as_ref() == s.pointer(),
            "the {} pointer",
            s.kind
        );
    }
    let ext4 = &f.stages[1].entries[1];
    let blocks = std::fs::metadata(empty.path_of(ext4))?.blocks() * 512;
    ensure!(
        blocks <= 1 << 20,
        "the sparse ext4 filled in: {blocks} bytes on disk"
    );
    let twice = pull(&p, &empty, &locked, &stage_keys(&f), &quiet)?;
    ensure!(
        (twice.pulled, twice.present) == (0, 3),
        "second pull: {twice:?}"
    );
    let missing = [("rootfs".to_owned(), "c3".repeat(32))];
    let none = pull(&p, &empty, &[], &missing, &quiet)?;
    ensure!(
        (none.pulled, none.absent) == (0, 1),
        "a stage the cache lacks: {none:?}"
    );
    Ok(())
}

/// Runs `pull` and expects a refusal whose message has `want`, and nothing stored.
fn ensure_refused(
    p: &Puller,
    f: &Fixture,
    locked: &[(EntryName, u64)],
    stages: &[(String, String)],
    want: &str,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    match pull(p, &store, locked, stages, &quiet) {
        Ok(r) => bail!("accepted ({r:?}); wanted a refusal with {want:?}"),
        Err(e @ CacheError::Refused { .. }) => {
            let text = e.to_string();
            ensure!(
                text.contains(want),
                "refused, but for {text:?} (wanted {want:?})"
            );
            eprintln!("REFUSED as it should: {text}");
        }
        Err(e) => bail!("failed, not refused: {e}"),
    }
    ensure_empty(&store)?;
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))?.collect();
    ensure!(left.is_empty(), "temp files left: {left:?}");
    let _ = f;
    Ok(())
}

#[test]
fn untrusted_and_unsigned_stages_are_refused() -> Result<()> {
    let registry = Registry::start()?;
    let f = fixture()?;
    let signer = key("someone-else")?;
    let c = cache(&registry, "pibake/untrusted")?;
    push(&c, &f.store, &[], &f.stages[..1], Some(&signer), &quiet)?;
    let trusted = key("lab-ci-1")?;
    let p = puller(&registry, "pibake/untrusted", &trusted)?;
    let stages = stage_keys(&f);
    ensure_refused(
        &p,
        &f,
        &[],
        &stages[..1],
        "no valid signature by a trusted key (signed by: [someone-else]; trusted: [lab-ci-1]",
    )?;
    // A key of the trusted name that is not the trusted key.
    let impostor = key("lab-ci-1")?;
    let c = cache(&registry, "pibake/impostor")?;
    push(&c, &f.store, &[], &f.stages[..1], Some(&impostor), &quiet)?;
    let p = puller(&registry, "pibake/impostor", &trusted)?;
    ensure_refused(&p, &f, &[], &stages[..1], "no valid signature")?;
    // No signature at all: written here with the client itself, as another tool could.
    push_raw(
        &registry,
        "pibake/unsigned",
        &f.store,
        &Item::stage(&stages[0].0, &stages[0].1)?,
        unsigned(&f.store, &f.stages[0])?,
    )?;
    let p = puller(&registry, "pibake/unsigned", &trusted)?;
    ensure_refused(&p, &f, &[], &stages[..1], "signed by: []")?;
    // A signed statement of another stage under this stage's tag.
    let mut other = f.stages[0].clone();
    other.input_hash = "d4".repeat(32);
    let message = Statement {
        kind: other.kind.clone(),
        input_hash: other.input_hash.clone(),
        entries: refs(&f.store, &other.entries)?,
    };
    let config = Config::Stage {
        version: CONFIG_VERSION,
        signatures: vec![trusted.sign(&message.message()?)],
        statement: message,
    };
    push_raw(
        &registry,
        "pibake/moved",
        &f.store,
        &Item::stage(&stages[0].0, &stages[0].1)?,
        config,
    )?;
    let p = puller(&registry, "pibake/moved", &trusted)?;
    ensure_refused(
        &p,
        &f,
        &[],
        &stages[..1],
        "its statement is for rootfs stage d4d4",
    )?;
    Ok(())
}

fn refs(store: &Store, entries: &[EntryName]) -> Result<Vec<EntryRef>> {
    entries
        .iter()
        .map(|e| {
            Ok(EntryRef {
                entry: e.to_string(),
                size: size(store, e)?,
            })
        })
        .collect()
}

fn unsigned(store: &Store, s: &StageOutput) -> Result<Config> {
    Ok(Config::Stage {
        version: CONFIG_VERSION,
        statement: Statement {
            kind: s.kind.clone(),
            input_hash: s.input_hash.clone(),
            entries: refs(store, &s.entries)?,
        },
        signatures: vec![],
    })
}

/// Pushes `config` and its layers under `item`'s tag with oci-client directly.
fn push_raw(
    registry: &Registry,
    repo: &str,
    store: &Store,
    item: &Item,
    config: Config,
) -> Result<()> {
    use oci_client::client::{ClientConfig, ClientProtocol};
    let url = registry.url(repo);
    let (host, repository) = url
        .trim_start_matches("http://")
        .split_once('/')
        .context("url")?;
    let reference = oci_client::Reference::with_tag(host.into(), repository.into(), item.tag());
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let bytes = serde_json::to_vec(&config)?;
    let sha = pibake_inputs::Sha256::of(&bytes);
    let manifest = artifact::manifest(&config, &sha, bytes.len() as u64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        for e in config.entries() {
            let name = e.name().context("entry")?;
            let data = std::fs::read(store.path_of(&name))?;
            client
                .push_blob(&reference, data, &artifact::digest(&name.sha256()))
                .await?;
        }
        client
            .push_blob(&reference, bytes.clone(), &artifact::digest(&sha))
            .await?;
        client
            .push_manifest(
                &reference,
                &oci_client::manifest::OciManifest::Image(manifest),
            )
            .await?;
        Ok(())
    })
}

#[test]
fn tampered_truncated_and_unlocked_blobs_are_refused() -> Result<()> {
    let registry = Registry::start()?;
    let f = fixture()?;
    let k = key("lab-ci-1")?;
    let deb_size = size(&f.store, &f.deb)?;
    let locked = [(f.deb.clone(), deb_size)];
    let stages = stage_keys(&f);

    // One bit of the .deb flipped in the registry's storage, its length kept.
    let c = cache(&registry, "pibake/tampered")?;
    push(
        &c,
        &f.store,
        std::slice::from_ref(&f.deb),
        &f.stages[..1],
        Some(&k),
        &quiet,
    )?;
    flip_a_bit(&registry.blob_path(&f.deb.sha256().to_hex()))?;
    let p = puller(&registry, "pibake/tampered", &k)?;
    ensure_refused(&p, &f, &locked, &[], "the registry sent sha256")?;
    // The same for a signed stage's tar: the signature does not make its bytes good.
    flip_a_bit(&registry.blob_path(&f.stages[0].entries[0].sha256().to_hex()))?;
    ensure_refused(&p, &f, &[], &stages[..1], "the registry sent sha256")?;

    // The rootpart's zstd frame cut short.
    let c = cache(&registry, "pibake/truncated")?;
    push(&c, &f.store, &[], &f.stages[1..], Some(&k), &quiet)?;
    let zst = registry.blob_path(&f.stages[1].entries[2].sha256().to_hex());
    let len = std::fs::metadata(&zst)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&zst)?
        .set_len(len / 2)?;
    let p = puller(&registry, "pibake/truncated", &k)?;
    ensure_refused(&p, &f, &[], &stages[1..], "the registry sent sha256")?;

    // The lock pins another size than the cache holds.
    let c = cache(&registry, "pibake/unlocked")?;
    push(
        &c,
        &f.store,
        std::slice::from_ref(&f.deb),
        &[],
        None,
        &quiet,
    )?;
    let p = puller(&registry, "pibake/unlocked", &k)?;
    ensure_refused(
        &p,
        &f,
        &[(f.deb.clone(), deb_size + 1)],
        &[],
        "the lock pins",
    )?;
    Ok(())
}

fn flip_a_bit(path: &Path) -> Result<()> {
    let mut bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// The child side of the SIGKILL test: pulls one big entry into the store it is given.
fn child_pull() -> Result<()> {
    let (Ok(url), Ok(store), Ok(entry), Ok(size)) = (
        std::env::var("PIBAKE_TEST_PULL_URL"),
        std::env::var("PIBAKE_TEST_PULL_STORE"),
        std::env::var("PIBAKE_TEST_PULL_ENTRY"),
        std::env::var("PIBAKE_TEST_PULL_SIZE"),
    ) else {
        bail!("not the child");
    };
    let p = Puller {
        cache: Cache::open(&url, Credentials::default())?,
        trusted: vec![],
    };
    let store = Store::open(store)?;
    pull(&p, &store, &[(entry.parse()?, size.parse()?)], &[], &quiet)?;
    Ok(())
}

#[test]
fn a_pull_killed_with_sigkill_leaves_no_entry_and_is_resumed() -> Result<()> {
    if std::env::var_os("PIBAKE_TEST_PULL_URL").is_some() {
        return child_pull();
    }
    let registry = Registry::start()?;
    let dir = tempfile::tempdir()?;
    let source = Store::open(dir.path().join("source"))?;
    let big = source.insert_reader("big.deb", None, &pattern(768 << 20, 7)[..])?;
    let big_size = size(&source, &big)?;
    let c = cache(&registry, "pibake/big")?;
    push(&c, &source, std::slice::from_ref(&big), &[], None, &quiet)?;

    let target = Store::open(dir.path().join("target"))?;
    let part = target.pull_path(&big);
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "a_pull_killed_with_sigkill_leaves_no_entry_and_is_resumed",
            "--nocapture",
        ])
        .env("PIBAKE_TEST_PULL_URL", registry.url("pibake/big"))
        .env("PIBAKE_TEST_PULL_STORE", target.root())
        .env("PIBAKE_TEST_PULL_ENTRY", big.to_string())
        .env("PIBAKE_TEST_PULL_SIZE", big_size.to_string())
        .stdin(std::process::Stdio::null())
        .spawn()?;
    let started = std::time::Instant::now();
    let killed_at = loop {
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have > 0 {
            child.kill()?;
            break have;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the pull ended ({status}) before it could be killed");
        }
        ensure!(started.elapsed().as_secs() < 60, "no download after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let status = child.wait()?;
    ensure!(!status.success(), "the child was not killed: {status}");
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "KILLED the pull with {killed_at} of {big_size} bytes received ({kept} kept in {})",
        part.display()
    );
    ensure!(
        kept < big_size,
        "the download was complete before the kill ({kept} bytes)"
    );
    ensure_empty(&target)?;
    ensure!(
        target.verify()?.corrupt.is_empty(),
        "a corrupt entry after the kill"
    );

    let p = Puller {
        cache: c,
        trusted: vec![],
    };
    let r = pull(&p, &target, &[(big.clone(), big_size)], &[], &quiet)?;
    eprintln!(
        "RESUMED: {} bytes downloaded after the kill (of {big_size})",
        r.bytes
    );
    ensure!(r.pulled == 1 && target.contains(&big), "not pulled: {r:?}");
    ensure!(
        r.bytes + kept == big_size,
        "not resumed from the {kept} bytes kept: {r:?}"
    );
    ensure!(!part.exists(), "the .part stayed");
    ensure!(
        target.verify()?.corrupt.is_empty(),
        "the resumed entry is corrupt"
    );
    Ok(())
}
