//! Ferry's global allocator: mimalloc, asked the way its fast path wants.
//!
//! nginx counterpart: none; nginx carves a request's memory out of a
//! per-request pool (`ngx_palloc`). Ferry's request makes a few dozen heap
//! allocations (headers, buffers, boxed futures), so the allocator's fast
//! path matters; glibc's was 8% of a 1 KB request's CPU.
//!
//! The `mimalloc` crate hands every allocation to `mi_malloc_aligned`.
//! mimalloc 3 serves that from a plain size class only when the class is a
//! power of two; other sizes over 1 KiB (a request's boxed futures, header
//! buffers) take its over-allocating aligned path, and their frees a slower
//! path too: 15 of a 1 KB request's 87 allocations did. A plain size class
//! already satisfies Rust's usual alignments: every class is a multiple of
//! 8 bytes (of 16 above 16), and pages start 16-aligned. So alignments up
//! to 8, and 16 with a size that is a multiple of 16, go to `mi_malloc`;
//! anything else keeps the aligned calls. (The same finding, upstream:
//! purpleprotocol/mimalloc_rust#170.)
//!
//! Use it in a binary of your own as the `ferry` binary does:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: ferry::allocator::Mimalloc = ferry::allocator::Mimalloc;
//! ```

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc as the global allocator: `#[global_allocator] static A: ferry::allocator::Mimalloc = ferry::allocator::Mimalloc;`
pub struct Mimalloc;

/// A plain size class of `size` bytes is aligned to `align`.
fn plain_fits(size: usize, align: usize) -> bool {
    align <= 8 || (align == 16 && size % 16 == 0)
}

type Plain = unsafe extern "C" fn(usize) -> *mut c_void;
type Aligned = unsafe extern "C" fn(usize, usize) -> *mut c_void;

/// A new block for `layout`: `plain` when a size class has the alignment,
/// `aligned` otherwise.
#[inline(always)]
unsafe fn new_block(layout: Layout, plain: Plain, aligned: Aligned) -> *mut u8 {
    if plain_fits(layout.size(), layout.align()) {
        plain(layout.size()) as *mut u8
    } else {
        aligned(layout.size(), layout.align()) as *mut u8
    }
}

// SAFETY: every pointer comes from mimalloc, and each call keeps the
// layout's alignment: plainly when `plain_fits` says a size class has it,
// through mimalloc's aligned calls otherwise.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        new_block(layout, mi_malloc, mi_malloc_aligned)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        new_block(layout, mi_zalloc, mi_zalloc_aligned)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_fits(new_size, layout.align()) {
            mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_keeps_its_alignment() {
        let a = Mimalloc;
        let sizes = (1..=40)
            .map(|i| i * 8)
            .chain([1000, 1024, 1100, 2784, 5432, 70_000]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: non-zero sizes; every block is freed with its layout.
                unsafe {
                    let blocks: Vec<*mut u8> = (0..64).map(|_| a.alloc(layout)).collect();
                    for &p in &blocks {
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        p.write_bytes(0xab, size);
                    }
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    let r = a.realloc(z, layout, size * 3);
                    assert_eq!(r as usize % align, 0, "realloc size {size} align {align}");
                    a.dealloc(r, Layout::from_size_align(size * 3, align).unwrap());
                    for p in blocks {
                        a.dealloc(p, layout);
                    }
                }
            }
        }
    }
}
