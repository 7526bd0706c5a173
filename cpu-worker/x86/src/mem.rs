//! How the CPU reaches guest memory, and the exceptions it can raise
//! (SDM vol. 3 ch. 6 "Interrupt and exception handling").
//!
//! The interpreter is generic over `Memory`: user-mode emulation maps the
//! guest address space into one host region; the system emulator will put
//! its softmmu behind the same trait. Linear addresses are 32-bit; every
//! access either succeeds or returns the fault, never touches host memory
//! outside the guest.

/// A failed memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFault {
    /// The linear address of the first byte that could not be accessed.
    pub addr: u32,
    pub write: bool,
    /// true: the page is mapped but the access is not allowed.
    pub protection: bool,
}

/// Guest memory as the CPU sees it (linear addresses, little-endian).
pub trait Memory {
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault>;
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), MemFault>;
    /// Fetches instruction bytes: as many of `buf.len()` as are executable
    /// from `addr` on. Returns the count; 0 with the fault if none is.
    fn fetch(&mut self, addr: u32, buf: &mut [u8]) -> Result<usize, MemFault>;

    /// Atomically replaces `expected` by `new` at `addr` (LOCK CMPXCHG and
    /// every locked read-modify-write). Returns the old value.
    fn cmpxchg(
        &mut self,
        addr: u32,
        expected: &[u8],
        new: &[u8],
        old: &mut [u8],
    ) -> Result<bool, MemFault>;

    fn read_u8(&mut self, addr: u32) -> Result<u8, MemFault> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }
    fn read_u16(&mut self, addr: u32) -> Result<u16, MemFault> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn read_u32(&mut self, addr: u32) -> Result<u32, MemFault> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&mut self, addr: u32) -> Result<u64, MemFault> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u8(&mut self, addr: u32, v: u8) -> Result<(), MemFault> {
        self.write(addr, &[v])
    }
    fn write_u16(&mut self, addr: u32, v: u16) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }
    fn write_u32(&mut self, addr: u32, v: u32) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }
    fn write_u64(&mut self, addr: u32, v: u64) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }
}

/// Why execution stopped before the end of an instruction, or an event the
/// environment (user-mode kernel emulation or the system emulator) handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #DE: DIV/IDIV by zero or quotient too large.
    DivideError,
    /// INT3 (#BP).
    Breakpoint,
    /// INTO with OF set (#OF).
    Overflow,
    /// BOUND range exceeded (#BR).
    BoundRange,
    /// #UD.
    InvalidOpcode,
    /// #GP with its error code.
    GeneralProtection(u32),
    /// #SS.
    StackFault,
    /// #PF.
    PageFault(MemFault),
    /// #MF: an unmasked x87 exception was pending.
    FpuError,
    /// #XM: an unmasked SSE exception.
    SimdFpError,
    /// #AC.
    AlignmentCheck,
    /// INT n (software interrupt), EIP already past the instruction.
    SoftwareInterrupt(u8),
    /// SYSENTER, EIP past the instruction.
    Sysenter,
    /// HLT.
    Halt,
}

impl From<MemFault> for Exception {
    fn from(f: MemFault) -> Self {
        Exception::PageFault(f)
    }
}

/// A flat memory in a host buffer, for tests: every byte readable, writable
/// and executable up to its length.
pub struct FlatMemory {
    pub bytes: Vec<u8>,
}

impl FlatMemory {
    pub fn new(size: usize) -> Self {
        FlatMemory {
            bytes: vec![0; size],
        }
    }

    fn range(
        &self,
        addr: u32,
        len: usize,
        write: bool,
    ) -> Result<std::ops::Range<usize>, MemFault> {
        let start = addr as usize;
        match start.checked_add(len) {
            Some(end) if end <= self.bytes.len() => Ok(start..end),
            _ => Err(MemFault {
                addr: addr.max(self.bytes.len() as u32),
                write,
                protection: false,
            }),
        }
    }
}

impl Memory for FlatMemory {
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        let r = self.range(addr, buf.len(), false)?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), MemFault> {
        let r = self.range(addr, data.len(), true)?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
    fn fetch(&mut self, addr: u32, buf: &mut [u8]) -> Result<usize, MemFault> {
        let start = addr as usize;
        if start >= self.bytes.len() {
            return Err(MemFault {
                addr,
                write: false,
                protection: false,
            });
        }
        let n = buf.len().min(self.bytes.len() - start);
        buf[..n].copy_from_slice(&self.bytes[start..start + n]);
        Ok(n)
    }
    fn cmpxchg(
        &mut self,
        addr: u32,
        expected: &[u8],
        new: &[u8],
        old: &mut [u8],
    ) -> Result<bool, MemFault> {
        let r = self.range(addr, new.len(), true)?;
        old.copy_from_slice(&self.bytes[r.clone()]);
        if old == expected {
            self.bytes[r].copy_from_slice(new);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}
