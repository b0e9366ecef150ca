//! A future made on the heap in place: `Box::pin(make())` makes the future
//! on the stack and copies it into the box, all of it, at every call; a
//! request's future is some 10 KiB, a body write's about one.
//!
//! nginx counterpart: none; its handlers are functions, not values.

/// `make()`'s future on the heap, made there rather than made on the stack
/// and copied.
pub(crate) fn in_place<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    // SAFETY: `write` initialises the whole slot before `assume_init`; the
    // future is pinned from then on and never moved out of its box.
    unsafe {
        slot.as_mut_ptr().write(make());
        std::pin::Pin::new_unchecked(slot.assume_init())
    }
}
