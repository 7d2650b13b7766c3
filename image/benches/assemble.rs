//! Assembly benchmark: one image from a rootfs tar vs `cp --sparse=always` of the result,
//! and the peak RSS of this process (VmHWM) while assembling.
//!
//! PIBAKE_BENCH_ROOTFS=<rootfs.tar>  use a real rootfs (e.g. the lab's rootfs stage output);
//! otherwise a synthetic tar of PIBAKE_BENCH_SIZE_MIB (default 1024) MiB is generated first
//! (not timed). PIBAKE_BENCH_DIR sets the scratch directory (default: the system temp dir).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pibake_image::assemble::{assemble, AssembleSpec, ImageIds};
use pibake_image::table::{DiskId, Guid, TableSpec};
use pibake_image::{Content, Entry, EntryPath, Layer, Rootfs, SourceDateEpoch};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Deterministic pseudo-rootfs: ~40% incompressible, the rest text-like, files from 100 B to
/// 8 MiB, a directory per 200 files.
fn synth(path: &Path, mib: u64) -> anyhow::Result<()> {
    let f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut b = tar::Builder::new(f);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let target = mib << 20;
    let mut total = 0u64;
    let mut i = 0u64;
    let mut buf = Vec::new();
    while total < target {
        if i.is_multiple_of(200) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            h.set_size(0);
            b.append_data(
                &mut h,
                format!("usr/share/d{:05}/", i / 200),
                std::io::empty(),
            )?;
        }
        let r = next();
        let size = match r % 100 {
            0..=59 => 100 + r % 4000,
            60..=94 => 4096 + r % (256 << 10),
            _ => (1 << 20) + r % (7 << 20),
        };
        buf.clear();
        if r % 5 < 2 {
            while (buf.len() as u64) < size {
                buf.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            while (buf.len() as u64) < size {
                buf.extend_from_slice(
                    format!(
                        "line {} of file {i}: lorem ipsum dolor sit amet\n",
                        buf.len()
                    )
                    .as_bytes(),
                );
            }
        }
        buf.truncate(size as usize);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        b.append_data(&mut h, format!("usr/share/d{:05}/f{i}", i / 200), &buf[..])?;
        total += size;
        i += 1;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let scratch = std::env::var_os("PIBAKE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("pibake-bench.")
        .tempdir_in(scratch)?;
    let tar_path = match std::env::var_os("PIBAKE_BENCH_ROOTFS") {
        Some(p) => PathBuf::from(p),
        None => {
            let mib: u64 = std::env::var("PIBAKE_BENCH_SIZE_MIB")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1024);
            let p = dir.path().join("synthetic-rootfs.tar");
            eprintln!("generating a {mib} MiB synthetic rootfs tar ...");
            synth(&p, mib)?;
            p
        }
    };
    let tar_bytes = std::fs::metadata(&tar_path)?.len();
    let hwm_before = vm_hwm_kib();

    let g = |b: u8| Guid::from_hash([b; 16]);
    let ids = ImageIds {
        table: TableSpec::Mbr {
            disk_id: DiskId(0x0bad_cafe),
        },
        fat_volume_id: 1,
        fs_uuid: g(1),
        hash_seed: g(2),
    };
    let t0 = Instant::now();
    let mut rootfs = Rootfs::from_base_tar(&tar_path, dir.path())?;
    let t_index = t0.elapsed();
    let p = |s: &str| EntryPath::new(s);
    rootfs.apply_layer(&Layer {
        name: "bench".into(),
        entries: vec![
            Entry::file(
                p("boot/firmware/config.txt")?,
                Content::bytes("arm_64bit=1\n"),
                0o644,
            ),
            Entry::file(
                p("boot/firmware/cmdline.txt")?,
                Content::bytes(format!(
                    "root=PARTUUID={} rootwait\n",
                    ids.table.root_partuuid()
                )),
                0o644,
            ),
            Entry::file(p("etc/hostname")?, Content::bytes("bench\n"), 0o644),
        ],
    });
    let spec = AssembleSpec::new(
        "bench",
        dir.path(),
        dir.path(),
        ids,
        SourceDateEpoch(1_700_000_000),
    );
    let out = assemble(&mut rootfs, &spec)?;
    let t_assemble = t0.elapsed();
    let hwm = vm_hwm_kib();

    let copy = dir.path().join("copy.img");
    let t1 = Instant::now();
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&out.img)
        .arg(&copy)
        .status()?;
    anyhow::ensure!(st.success(), "cp failed");
    let t_cp = t1.elapsed();

    println!(
        "rootfs tar:            {} MiB ({} entries)",
        tar_bytes >> 20,
        out.root_tar.entries
    );
    println!(
        "image:                 {} MiB, mapped {} MiB, sha256 {}",
        out.image_bytes >> 20,
        out.mapped_bytes >> 20,
        out.sha256
    );
    println!("index base tar:        {:.2} s", t_index.as_secs_f64());
    println!(
        "assemble (all outputs): {:.2} s  (index, root tar, FAT, mke2fs, scan+bmap+sha256+zstd)",
        t_assemble.as_secs_f64()
    );
    for (name, d) in &out.phases {
        println!("  {name:<24} {:.2} s", d.as_secs_f64());
    }
    println!("cp --sparse=always:    {:.2} s", t_cp.as_secs_f64());
    println!(
        "ratio assemble / cp:   {:.2}x  (goal <= 2x)",
        t_assemble.as_secs_f64() / t_cp.as_secs_f64().max(1e-6)
    );
    println!(
        "peak RSS (VmHWM):      {} MiB before, {} MiB after assembling  (goal <= 512 MiB)",
        hwm_before >> 10,
        hwm >> 10
    );
    Ok(())
}
