#![allow(clippy::unwrap_used)]

mod common;

use std::io::Cursor;
use std::process::Command;

use common::*;
use pibake_image::table::*;

#[test]
fn mbr_in_memory_round_trip_and_partuuid() {
    let l = layout(256 << 20, 1000 << 20, false);
    assert_eq!(
        (l.boot_start, l.root_start % ALIGN, l.disk_len % ALIGN),
        (4 << 20, 0, 0)
    );
    let mut disk = Cursor::new(vec![0u8; 1 << 20]);
    let spec = TableSpec::Mbr {
        disk_id: DiskId(0xdeadbeef),
    };
    write_table(&mut disk, &spec, &l).unwrap();
    let v = disk.get_ref();
    assert_eq!(&v[440..444], &0xdeadbeefu32.to_le_bytes());
    assert_eq!(
        (v[446 + 4], v[462 + 4], v[510], v[511]),
        (0x0c, 0x83, 0x55, 0xaa)
    );
    let t = read_table(&mut disk, l.disk_len).unwrap();
    let parts = t.partitions();
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0].start, parts[0].len), (l.boot_start, l.boot_len));
    assert_eq!((parts[1].start, parts[1].len), (l.root_start, l.root_len));
    assert_eq!(spec.root_partuuid(), "deadbeef-02");
    assert_eq!(t.partuuid(2).as_deref(), Some("deadbeef-02"));
}

#[test]
fn gpt_in_memory_round_trip_with_crc() {
    let l = layout(64 << 20, 100 << 20, true);
    let g = |b| Guid::from_hash([b; 16]);
    let spec = TableSpec::Gpt {
        disk: g(1),
        boot: g(2),
        root: g(3),
    };
    let mut disk = Cursor::new(vec![0u8; l.disk_len as usize]);
    write_table(&mut disk, &spec, &l).unwrap();
    let t = read_table(&mut disk, l.disk_len).unwrap();
    let Table::Gpt {
        disk: d,
        partitions,
        problems,
    } = &t
    else {
        panic!("not GPT: {t:?}")
    };
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(*d, g(1));
    assert_eq!(partitions[1].guid, Some(g(3)));
    assert_eq!(t.partuuid(2), Some(g(3).to_string()));
    assert_eq!(spec.root_partuuid(), g(3).to_string());
    assert!(partitions[0].kind.is_fat() && partitions[1].kind.is_linux());
    // A flipped byte in the entry array is caught by its CRC.
    disk.get_mut()[1024 + 40] ^= 1;
    let Table::Gpt { problems, .. } = read_table(&mut disk, l.disk_len).unwrap() else {
        panic!()
    };
    assert!(problems.iter().any(|p| p.contains("CRC32")), "{problems:?}");
}

#[test]
fn guid_text_form() {
    let s = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    assert_eq!(s.parse::<Guid>().unwrap().to_string(), s);
    assert!("0fc63daf-8483-4772-8e79".parse::<Guid>().is_err());
    let h = Guid::from_hash([0xff; 16]).to_string();
    assert_eq!(&h[14..15], "4"); // version 4 shape
}

fn sfdisk_json(path: &std::path::Path) -> String {
    need("sfdisk", "fdisk");
    run(Command::new("sfdisk").arg("--json").arg(path))
}

#[test]
fn sfdisk_reads_mbr_and_gpt() {
    let d = tmpdir();
    let l = layout(64 << 20, 100 << 20, false);
    let f = d.path().join("mbr.img");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(l.disk_len).unwrap();
    write_table(
        &mut &file,
        &TableSpec::Mbr {
            disk_id: DiskId(0x01020304),
        },
        &l,
    )
    .unwrap();
    let j = sfdisk_json(&f);
    assert!(
        j.contains("\"label\": \"dos\"") && j.contains("\"id\": \"0x01020304\""),
        "{j}"
    );
    for want in [
        "\"start\": 8192",
        "\"size\": 131072",
        "\"type\": \"c\"",
        "\"start\": 139264",
        "\"size\": 204800",
    ] {
        assert!(j.contains(want), "{want} not in {j}");
    }
    assert!(j.contains("\"type\": \"83\""), "{j}");

    let l = layout(64 << 20, 100 << 20, true);
    let f = d.path().join("gpt.img");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(l.disk_len).unwrap();
    let g = |b| Guid::from_hash([b; 16]);
    write_table(
        &mut &file,
        &TableSpec::Gpt {
            disk: g(1),
            boot: g(2),
            root: g(3),
        },
        &l,
    )
    .unwrap();
    let j = sfdisk_json(&f);
    assert!(j.contains("\"label\": \"gpt\""), "{j}");
    assert!(j.to_lowercase().contains(&g(1).to_string()), "{j}");
    assert!(j.to_lowercase().contains(&g(3).to_string()), "{j}");
    assert!(
        j.to_uppercase().contains(&GPT_TYPE_LINUX.to_uppercase()),
        "{j}"
    );
    // sfdisk --verify finds no problem (both headers, CRCs, alignment).
    let v = run(Command::new("sfdisk").arg("--verify").arg(&f));
    assert!(v.contains("No errors detected"), "{v}");
}

#[test]
fn ids_from_input_hash_are_stable_and_distinct() {
    use pibake_image::assemble::{ImageIds, TableKind};
    let a = ImageIds::from_input_hash(&[7; 32], TableKind::Mbr);
    assert_eq!(a, ImageIds::from_input_hash(&[7; 32], TableKind::Mbr));
    assert_ne!(a, ImageIds::from_input_hash(&[8; 32], TableKind::Mbr));
    assert_ne!(a.fs_uuid, a.hash_seed);
    let g = ImageIds::from_input_hash(&[7; 32], TableKind::Gpt);
    let TableSpec::Gpt { disk, boot, root } = g.table else {
        panic!("not gpt")
    };
    assert!(disk != boot && boot != root && disk != root);
    assert_eq!(g.fs_uuid, a.fs_uuid);
}
