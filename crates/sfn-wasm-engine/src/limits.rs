//! The per-task memory cap.
//!
//! A guest denied memory usually aborts with a bare `unreachable` trap (Rust's
//! allocation-failure handler), which says nothing about why. The limiter remembers that
//! it refused a growth, so the host can name the failure `SfnWasmHost.OutOfMemory`.

use wasmtime::ResourceLimiter;

/// Caps the total size of a task's linear memories and records refusals.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit_bytes: usize,
    used_bytes: usize,
    refused: Option<usize>,
}

impl MemoryLimiter {
    /// A limiter that allows `limit_bytes` of linear memory across all of a task's memories.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            limit_bytes,
            used_bytes: 0,
            refused: None,
        }
    }

    /// The total size that was asked for when growth was first refused, if it was.
    pub fn refused(&self) -> Option<usize> {
        self.refused
    }

    /// The cap, in bytes.
    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// The most linear memory the task held at once. Memories never shrink, so this is
    /// their total size now.
    pub fn peak_bytes(&self) -> usize {
        self.used_bytes
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Instantiation reports each memory as growing from 0, so the sum of growths is
        // the total size of all the task's memories.
        let total = self
            .used_bytes
            .saturating_add(desired.saturating_sub(current));
        if total > self.limit_bytes {
            self.refused.get_or_insert(total);
            return Ok(false);
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_memory_against_one_cap() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(!limiter.memory_growing(0, 50, None).unwrap());
        assert_eq!(limiter.refused(), Some(110));
        assert!(limiter.memory_growing(60, 100, None).unwrap());
        assert!(!limiter.memory_growing(100, 101, None).unwrap());
        assert_eq!(limiter.refused(), Some(110), "the first refusal is kept");
        assert_eq!(limiter.peak_bytes(), 100, "refused growth is not counted");
    }
}
