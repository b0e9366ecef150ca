//! The `ferry` binary: Ferry's `ProxyHttp` with no hook overridden; the YAML
//! says everything.

/// mimalloc rather than the system allocator: a request allocates a few
/// dozen small objects (headers, buffers, futures), and glibc's malloc and
/// free were 8% of the CPU of a 1 KB request (docs/performance.md).
#[global_allocator]
static ALLOC: ferry::allocator::Mimalloc = ferry::allocator::Mimalloc;

fn main() {
    std::process::exit(ferry::main(ferry::DefaultProxy));
}
