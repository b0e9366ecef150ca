//! The `ferry` binary as the integration tests run it (Cargo hands tests
//! the path of their own package's binaries only).

fn main() {
    std::process::exit(ferry::main(ferry::DefaultProxy));
}
