//! The shared-memory segment: an anonymous memfd, mapped shared. Other
//! processes map the same pages from the file descriptor (passed over a Unix
//! socket). This is the crate's only module with `unsafe`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// A mapped shared-memory segment.
#[derive(Debug)]
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; the object table decides who
// may write which range (OS-1, OS-3), so sharing the handle across threads
// is as safe as sharing a `&[u8]`.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a segment of `len` bytes backed by a new memfd.
    pub fn create(name: &str, len: usize) -> io::Result<Segment> {
        let cname = CString::new(name).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "segment name has a NUL byte")
        })?;
        // SAFETY: memfd_create reads a valid NUL-terminated string and returns a new fd or -1.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Segment::map(fd, len)
    }

    /// Maps a segment received from another process.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Segment> {
        // SAFETY: fstat writes into a zeroed stat struct we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and pointer to our struct.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Segment::map(fd, st.st_size as usize)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an object store segment cannot be empty",
            ));
        }
        // SAFETY: a fresh shared mapping of a descriptor we own, at an address the kernel picks.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Segment { ptr, len, fd })
    }

    /// The segment's size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: segments are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Allocates every page of the segment now and maps them into this
    /// process, so that no write into the store later waits for the kernel
    /// to zero a page at first touch (Ray's `preallocate_plasma_memory`).
    /// The segment's whole size is committed at once. Call it before any
    /// other process maps the segment (on kernels before 5.14 it reads
    /// every page).
    pub fn prefault(&self) -> io::Result<()> {
        // SAFETY: fallocate over exactly the size of a descriptor we own.
        if unsafe { libc::fallocate(self.fd.as_raw_fd(), 0, 0, self.len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: advice over exactly our mapping; populating writable page
        // table entries changes no byte of it.
        let advised = unsafe {
            libc::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        let e = io::Error::last_os_error();
        match advised {
            0 => Ok(()),
            // Kernels before 5.14 lack the advice, and `fallocate` leaves
            // shared-memory pages to be zeroed at their first fault: read
            // one byte of each page, which zeroes it now (a later write is
            // then a cheap fault).
            _ if e.raw_os_error() == Some(libc::EINVAL) => {
                self.read_every_page();
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Reads one byte of every page (the pre-fault where the kernel lacks
    /// `MADV_POPULATE_WRITE`).
    fn read_every_page(&self) {
        // SAFETY: sysconf reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        for at in (0..self.len).step_by(page) {
            // SAFETY: `at` is inside the mapping; a volatile read of one
            // byte races with no writer, since no other process has mapped
            // the segment yet (`prefault`'s contract).
            unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(at)) };
        }
    }

    /// The descriptor, to pass to other processes.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The mapping's base address in this process.
    pub fn base_addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {offset}+{len} is outside the {}-byte segment",
                    self.len
                ),
            )),
        }
    }

    /// A read-only view of `len` bytes at `offset`.
    ///
    /// The view is only meaningful for sealed objects, whose bytes never
    /// change (OS-1); the object table hands out offsets only for those.
    pub fn bytes(&self, offset: usize, len: usize) -> io::Result<&[u8]> {
        self.check(offset, len)?;
        // SAFETY: the range is inside the mapping, which lives as long as
        // `self`; sealed ranges are never written again (OS-1), so no write
        // aliases this shared borrow.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) })
    }

    /// Copies `data` into the segment at `offset` (an unsealed object's range).
    pub fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: the range is inside the mapping; the object table gives an
        // unsealed range to exactly one writer and no reader (OS-3), so the
        // copy races with nothing.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
        Ok(())
    }

    /// A mutable view of an unsealed object's range, for writing in place.
    ///
    /// # Safety
    /// The caller must be the range's only writer and no reader may view it
    /// until it is sealed (the object table's Created state guarantees this
    /// for the process that created the object).
    // The segment is shared memory: exclusivity comes from the object table
    // (the caller's contract), not from `&mut self`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: usize, len: usize) -> io::Result<&mut [u8]> {
        self.check(offset, len)?;
        // SAFETY: in bounds; exclusivity is the caller's contract above.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) })
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`; no borrow of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_one_fd_see_the_same_bytes() {
        let a = Segment::create("prism-test", 1 << 16).unwrap();
        a.write(100, b"hello").unwrap();
        let dup = a.fd().try_clone_to_owned().unwrap();
        let b = Segment::from_fd(dup).unwrap();
        assert_eq!(b.bytes(100, 5).unwrap(), b"hello");
        assert_ne!(a.base_addr(), b.base_addr());
        assert!(a.bytes(1 << 16, 1).is_err());
        assert!(a.write(usize::MAX, b"x").is_err());
    }

    fn page_size() -> usize {
        // SAFETY: sysconf reads a constant.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    /// Pages of `seg` present in memory, by `mincore`.
    fn resident_pages(seg: &Segment) -> usize {
        let mut present = vec![0u8; seg.len.div_ceil(page_size())];
        // SAFETY: exactly our mapping, and one byte per page to write into.
        let r = unsafe { libc::mincore(seg.ptr.as_ptr().cast(), seg.len, present.as_mut_ptr()) };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        present.iter().filter(|p| **p & 1 == 1).count()
    }

    #[test]
    fn a_prefaulted_segment_has_every_page_present_and_zero() {
        let len = 4 << 20;
        let seg = Segment::create("prism-prefault", len).unwrap();
        let lazy = Segment::create("prism-lazy", len).unwrap();
        lazy.write(0, b"x").unwrap();
        assert_eq!(resident_pages(&seg), 0, "a new segment has no page yet");
        assert_eq!(resident_pages(&lazy), 1, "a write brings in one page");
        seg.prefault().unwrap();
        assert_eq!(
            resident_pages(&seg),
            len / page_size(),
            "every page is present"
        );
        assert!(seg.bytes(0, len).unwrap().iter().all(|b| *b == 0));
        seg.write(len - 5, b"tail!").unwrap();
        assert_eq!(seg.bytes(len - 5, 5).unwrap(), b"tail!");
        // The fallback for kernels without MADV_POPULATE_WRITE brings in
        // every page too.
        let old_kernel = Segment::create("prism-read-fault", len).unwrap();
        old_kernel.read_every_page();
        assert_eq!(resident_pages(&old_kernel), len / page_size());
    }
}
