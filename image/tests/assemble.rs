mod common;

use common::*;
use std::process::Command;

#[test]
fn smoke() {
    let d = tmpdir();
    let out = build(d.path(), "t", false);
    println!("{out:#?}");
    let img = out.img.to_str().unwrap().to_owned();
    println!("{}", run(Command::new("sfdisk").args(["--json", &img])));
    println!("{}", run(Command::new("du").args(["-h", "--apparent-size", &img])));
    println!("{}", run(Command::new("du").args(["-h", &img])));
    std::mem::forget(d);
}
