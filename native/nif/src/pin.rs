//! Keeps this library mapped for the life of the VM.
//!
//! The runtime's threads run code from this library. Erlang unloads a NIF
//! library when its module is purged, and rustler offers no unload hook to
//! stop those threads first, so the library opens itself once more with
//! `RTLD_NODELETE`: a purge then leaves the code in place and the VM keeps
//! running. (glibc already refuses to unmap a library whose threads
//! registered thread-local destructors, as tokio's do; this does not rely
//! on that.) Hot upgrade of the NIF is refused (rustler has no upgrade hook);
//! restart the node to change the library.

use std::ffi::c_void;

pub fn pin_library() -> bool {
    // SAFETY: dladdr only reads the address of a function of this library;
    // dlopen with RTLD_NOLOAD never loads anything new, it only adds a
    // reference (with RTLD_NODELETE) to the already mapped library.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let here = pin_library as *const c_void;
        if libc::dladdr(here, &mut info) == 0 || info.dli_fname.is_null() {
            return false;
        }
        let handle = libc::dlopen(
            info.dli_fname,
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        );
        !handle.is_null()
    }
}
