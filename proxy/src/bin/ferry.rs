//! The `ferry` binary: Ferry's `ProxyHttp` with no hook overridden; the YAML
//! says everything.

/// mimalloc rather than the system allocator: a request allocates a few
/// dozen small objects (headers, buffers, futures), and glibc's malloc and
/// free were 8% of the CPU of a 1 KB request (docs/performance.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: ferry::allocator::Mimalloc = ferry::allocator::Mimalloc;

fn main() {
    let code = ferry::Program::new("ferry")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A reverse proxy with nginx's upstream semantics, on Pingora")
        .run::<ferry::serde::de::IgnoredAny, _>(|_| Ok(ferry::DefaultProxy));
    std::process::exit(code);
}
