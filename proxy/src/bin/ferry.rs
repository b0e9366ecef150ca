//! The `ferry` binary: Ferry's `ProxyHttp` with no hook overridden; the YAML
//! says everything.

fn main() {
    std::process::exit(ferry::main(ferry::DefaultProxy));
}
