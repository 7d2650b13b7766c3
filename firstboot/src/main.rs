fn main() {
    eprintln!("pibake-firstboot: not yet implemented");
    std::process::exit(2);
}
