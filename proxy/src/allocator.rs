//! Ferry's global allocator: mimalloc, asked the way its fast path wants,
//! with a few blocks per size class kept on each thread.
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
//! mimalloc frees a block onto its page's `local_free` list and allocates
//! from the page's `free` list, moving the first to the second only on its
//! slow path. A request allocates most of its larger blocks one of a size
//! at a time (its future, its buffers) and frees each before the next
//! request asks again: every one of those allocations took the slow path
//! (seven a request, a third of the allocator's work). So each thread keeps
//! up to four freed blocks of each size class from 129 bytes to
//! 16 KiB (mimalloc's own classes, four to a doubling), hands them out
//! again first, and gives them back to mimalloc when it exits. A block in
//! such a class is asked of mimalloc at its class's full size, so any block
//! of the class fits any request of it.
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
use std::cell::UnsafeCell;
use std::ffi::c_void;

/// mimalloc as the global allocator: `#[global_allocator] static A: ferry::allocator::Mimalloc = ferry::allocator::Mimalloc;`
pub struct Mimalloc;

/// A plain size class of `size` bytes is aligned to `align`.
fn plain_fits(size: usize, align: usize) -> bool {
    align <= 8 || (align == 16 && size % 16 == 0)
}

/// The smallest size a thread keeps freed blocks of is one more than this.
const KEPT_ABOVE: usize = 128;
/// The largest.
const KEPT_MOST: usize = 16 * 1024;
/// Size classes kept: four to each doubling from 129 bytes to 16 KiB.
const CLASSES: usize = 28;
/// Freed blocks kept per class and thread.
const SLOTS: usize = 4;
/// Every kept class's size is a multiple of this (`1 << GRAIN`).
const GRAIN: u32 = 5;
/// [`CLASS_OF`]'s entry for a size below the kept ones.
const NO_CLASS: u8 = u8::MAX;

/// The kept class of a plain block of `size` bytes, if any.
#[inline(always)]
fn class_of(size: usize) -> Option<usize> {
    let step = size.wrapping_sub(1) >> GRAIN;
    match CLASS_OF.get(step) {
        Some(&class) if class != NO_CLASS => Some(class as usize),
        _ => None,
    }
}

/// The bytes every block of kept class `class` has.
#[inline(always)]
fn class_size(class: usize) -> usize {
    let (top, quarter) = (class / 4 + 7, class % 4);
    (4 + quarter + 1) << (top - 2)
}

/// The kept class of each 32-byte step of sizes up to [`KEPT_MOST`]
/// (`CLASS_OF[(size - 1) >> GRAIN]`): the class of the step's largest size,
/// the classes' bounds being steps' bounds.
static CLASS_OF: [u8; KEPT_MOST >> GRAIN] = {
    let mut table = [NO_CLASS; KEPT_MOST >> GRAIN];
    let mut step = KEPT_ABOVE >> GRAIN;
    while step < table.len() {
        let largest = (step + 1) << GRAIN;
        let top = (usize::BITS - 1 - (largest - 1).leading_zeros()) as usize;
        let quarter = ((largest - 1) >> (top - 2)) & 3;
        table[step] = ((top - 7) * 4 + quarter) as u8;
        step += 1;
    }
    table
};

/// What mimalloc is asked for a plain block of `size` bytes: its kept
/// class's full size, when it has one.
#[inline(always)]
fn asked(size: usize) -> usize {
    class_of(size).map_or(size, class_size)
}

/// One class's freed blocks on one thread: `blocks[..count]`.
#[derive(Clone, Copy)]
struct Class {
    count: usize,
    blocks: [*mut u8; SLOTS],
}

/// One thread's kept blocks. Only this module touches them, and never
/// while a reference to them is alive elsewhere: nothing called while one
/// is held allocates.
struct Kept {
    classes: [Class; CLASSES],
    /// Blocks a class may hold: 0 until the thread's [`Release`] is set up
    /// (a block kept before would outlive the thread), and again once it
    /// ran; [`SLOTS`] between.
    most: usize,
    /// The thread's [`Release`] was set up (it may have run since).
    armed: bool,
}

thread_local! {
    // No destructor of its own, so reaching it is one load; [`RELEASE`]'s
    // gives its blocks back.
    static KEPT: UnsafeCell<Kept> = const {
        UnsafeCell::new(Kept {
            classes: [Class { count: 0, blocks: [std::ptr::null_mut(); SLOTS] }; CLASSES],
            most: 0,
            armed: false,
        })
    };
    static RELEASE: Release = const { Release };
}

/// Gives the thread's kept blocks back to mimalloc when the thread ends,
/// and keeps none after.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let _ = KEPT.try_with(|k| {
            // SAFETY: the only reference to the thread's blocks (see `Kept`).
            let kept = unsafe { &mut *k.get() };
            kept.most = 0;
            for class in &mut kept.classes {
                for &block in &class.blocks[..class.count] {
                    // SAFETY: a kept block came from mimalloc and is in no use.
                    unsafe { mi_free(block as *mut c_void) };
                }
                class.count = 0;
            }
        });
    }
}

/// A kept block of `class` (< [`CLASSES`]), or null.
#[inline(always)]
fn take(class: usize) -> *mut u8 {
    KEPT.with(|k| {
        // SAFETY: the only reference to the thread's blocks (see `Kept`);
        // `class` is below CLASSES, and `count` at most SLOTS.
        unsafe {
            let c = (*k.get()).classes.get_unchecked_mut(class);
            if c.count == 0 {
                return std::ptr::null_mut();
            }
            c.count -= 1;
            *c.blocks.get_unchecked(c.count)
        }
    })
}

/// Keeps `block` of `class` (< [`CLASSES`]); false when the class is full
/// (or the thread keeps none), and the block goes back to mimalloc.
#[inline(always)]
fn keep(class: usize, block: *mut u8) -> bool {
    // Whether it was kept, and whether the thread keeps none (yet).
    let (kept, none) = KEPT.with(|k| {
        // SAFETY: as in `take`.
        unsafe {
            let kept = &mut *k.get();
            let c = kept.classes.get_unchecked_mut(class);
            if c.count >= kept.most {
                return (false, kept.most == 0);
            }
            *c.blocks.get_unchecked_mut(c.count) = block;
            c.count += 1;
            (true, false)
        }
    });
    kept || (none && arm_and_keep(class, block))
}

/// Sets up the thread's [`Release`] the first time a block could be kept,
/// then keeps `block` if the thread keeps blocks now.
#[cold]
#[inline(never)]
fn arm_and_keep(class: usize, block: *mut u8) -> bool {
    let first = KEPT.with(|k| {
        // SAFETY: as in `take`; released before `RELEASE` is reached, which
        // may allocate.
        let kept = unsafe { &mut *k.get() };
        !std::mem::replace(&mut kept.armed, true)
    });
    if !first || RELEASE.try_with(|_| ()).is_err() {
        return false;
    }
    KEPT.with(|k| {
        // SAFETY: as in `take`.
        unsafe { (*k.get()).most = SLOTS };
    });
    keep(class, block)
}

// SAFETY: every pointer comes from mimalloc, and each call keeps the
// layout's alignment: plainly when `plain_fits` says a size class has it,
// through mimalloc's aligned calls otherwise. A plain block whose size has
// a kept class is always asked at that class's size (`asked`), so a kept
// block is large enough, and aligned enough, for any plain layout of its
// class.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        if !plain_fits(size, layout.align()) {
            return mi_malloc_aligned(size, layout.align()) as *mut u8;
        }
        match class_of(size) {
            Some(class) => match take(class) {
                block if !block.is_null() => block,
                _ => mi_malloc(class_size(class)) as *mut u8,
            },
            None => mi_malloc(size) as *mut u8,
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        if plain_fits(size, layout.align()) {
            mi_zalloc(asked(size)) as *mut u8
        } else {
            mi_zalloc_aligned(size, layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let size = layout.size();
        if plain_fits(size, layout.align()) {
            if let Some(class) = class_of(size) {
                if keep(class, ptr) {
                    return;
                }
            }
        }
        mi_free(ptr as *mut c_void)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_fits(new_size, layout.align()) {
            mi_realloc(ptr as *mut c_void, asked(new_size)) as *mut u8
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

    extern "C" {
        // mimalloc's, outside the sys crate's default features.
        fn mi_usable_size(p: *const c_void) -> usize;
    }

    #[test]
    fn each_size_has_the_tightest_kept_class_that_holds_it() {
        assert_eq!(class_of(KEPT_ABOVE), None);
        assert_eq!(class_of(KEPT_MOST + 1), None);
        assert_eq!(class_of(KEPT_ABOVE + 1), Some(0));
        assert_eq!(class_of(KEPT_MOST), Some(CLASSES - 1));
        assert_eq!(class_size(CLASSES - 1), KEPT_MOST);
        for size in KEPT_ABOVE + 1..=KEPT_MOST {
            let class = class_of(size).unwrap();
            assert!(class_size(class) >= size, "{size}");
            assert_eq!(class_size(class) % 32, 0);
            if class > 0 {
                assert!(class_size(class - 1) < size, "{size}");
            }
        }
    }

    #[test]
    fn a_freed_block_serves_the_next_of_its_class_and_fits_it_whole() {
        let a = Mimalloc;
        for (first, next) in [(3600, 4096), (4096, 3585), (129, 160), (8624, 10_000)] {
            let (l1, l2) = (
                Layout::from_size_align(first, 8).unwrap(),
                Layout::from_size_align(next, if next % 16 == 0 { 16 } else { 8 }).unwrap(),
            );
            // SAFETY: each block is freed once, with the layout it was made with.
            unsafe {
                let p = a.alloc(l1);
                p.write_bytes(1, first);
                a.dealloc(p, l1);
                let q = a.alloc(l2);
                assert_eq!(p, q, "{first} then {next}");
                assert!(mi_usable_size(q as *const c_void) >= next);
                assert_eq!(q as usize % l2.align(), 0);
                q.write_bytes(2, next);
                a.dealloc(q, l2);
                // Taken again, so the next test's thread state is as found.
                let r = a.alloc(l1);
                mi_free(r as *mut c_void);
            }
        }
    }

    /// What [`Probe`] found when its thread ended: the blocks of 1000
    /// bytes kept and the blocks a class may hold, plus one.
    static PROBED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Frees a block at its thread's end, after `RELEASE` ran (set up
    /// before it, so destroyed after it), and notes what was kept.
    struct Probe;

    impl Drop for Probe {
        fn drop(&mut self) {
            let (a, layout) = (Mimalloc, Layout::from_size_align(1000, 8).unwrap());
            // SAFETY: the block is freed once, with its layout.
            unsafe { a.dealloc(a.alloc(layout), layout) };
            let class = class_of(1000).unwrap();
            // SAFETY: no other reference to the thread's blocks is alive.
            let (count, most) = KEPT.with(|k| unsafe {
                let k = &*k.get();
                (k.classes[class].count, k.most)
            });
            PROBED.store(count + most + 1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    thread_local! {
        static PROBE: Probe = const { Probe };
    }

    #[test]
    fn a_thread_keeps_at_most_its_slots_and_frees_them_when_it_ends() {
        let t = std::thread::spawn(|| {
            PROBE.with(|_| ());
            let a = Mimalloc;
            let layout = Layout::from_size_align(1000, 8).unwrap();
            // SAFETY: each block is freed once, with its layout.
            unsafe {
                let blocks: Vec<*mut u8> = (0..3 * SLOTS).map(|_| a.alloc(layout)).collect();
                for &b in &blocks {
                    a.dealloc(b, layout);
                }
                let class = class_of(1000).unwrap();
                let kept = KEPT.with(|k| (*k.get()).classes[class].count);
                assert_eq!(kept, SLOTS);
                // The first ones freed were kept; they come back newest first.
                for i in (0..SLOTS).rev() {
                    assert_eq!(a.alloc(layout), blocks[i]);
                }
                assert_eq!(KEPT.with(|k| (*k.get()).classes[class].count), 0);
                for &b in &blocks[..SLOTS] {
                    a.dealloc(b, layout);
                }
            }
        });
        t.join().unwrap();
        // At the thread's end its blocks went back and no more were kept.
        assert_eq!(PROBED.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_block_grows_and_shrinks_across_kept_classes_with_its_bytes() {
        let a = Mimalloc;
        let mut layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: the block is used within its current layout and freed once.
        unsafe {
            let mut p = a.alloc(layout);
            p.write_bytes(7, 100);
            for size in [200, 5000, 20_000, 300, 130, 64] {
                p = a.realloc(p, layout, size);
                let kept = size.min(layout.size()).min(100);
                assert!(std::slice::from_raw_parts(p, kept).iter().all(|&b| b == 7));
                assert!(mi_usable_size(p as *const c_void) >= asked(size));
                layout = Layout::from_size_align(size, 8).unwrap();
            }
            a.dealloc(p, layout);
        }
    }
}
