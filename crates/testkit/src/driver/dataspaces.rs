//! The driver's actions on dataspaces and pools: open, resize, copy, close, close all,
//! write through the manager, and taking and giving back frames (`Hog`, `Unhog`).

use super::*;

impl<T: Target> Driver<T> {
    pub(super) fn open(&mut self, backing: Backing, size: u8, pool: u8, owner: u8) -> Check {
        self.make_room()?;
        if self.dataspaces.len() >= MAX_DATASPACES {
            self.counters.skipped_full += 1;
            return Ok(());
        }
        let size = size_of_code(size);
        let owner = CLIENTS[owner as usize % CLIENTS.len()];
        let (pool, base, frames) = self.pool_of(pool);
        let p = pool.index() as u32;
        let (flags, placement) = match backing {
            Backing::Anonymous => (DmFlags::empty(), PhysPlacement::AnyAddr),
            Backing::Contiguous => (DmFlags::CONTIGUOUS, PhysPlacement::AnyAddr),
            Backing::Pinned => (DmFlags::PINNED, PhysPlacement::AnyAddr),
            Backing::Superpages => (DmFlags::SUPERPAGES, PhysPlacement::AnyAddr),
            Backing::Fixed(k) => {
                let page = base + (u64::from(k) * 7) % frames;
                (DmFlags::empty(), PhysPlacement::Fixed(PhysAddr::new(page * PAGE)))
            }
        };
        let r = self.target.manager(|m, _| match (backing, pool == PoolId::DEFAULT, size % 3) {
            (Backing::Anonymous, true, 0) => m.mem_open(FactoryId::ROOT, owner, size, 0, flags, "anon"),
            (Backing::Superpages, true, 0) => {
                m.alloc(FactoryId::ROOT, owner, size as i64, MemAllocFlags::SUPER_PAGES, 0, PhysAddr::zero())
            }
            (Backing::Contiguous, true, 0) => {
                m.alloc(FactoryId::ROOT, owner, size as i64, MemAllocFlags::CONTINUOUS, 0, PhysAddr::zero())
            }
            _ => m.memphys_open(
                FactoryId::ROOT,
                owner,
                MemphysOpenRequest::new(p, size).placed(placement).flags(flags).name("phys"),
            ),
        });
        let code = r.as_ref().map(|_| ()).map_err(|e| e.code());
        if size == 0 {
            return self.expect_refused("open of 0 bytes", code);
        }
        let fixed = matches!(backing, Backing::Fixed(_));
        if fixed && let Err(e) = r {
            // A fixed address may be taken, reserved (a pool header) or outside the pool.
            let _ = e;
            self.counters.create_out_of_memory += 1;
            return Ok(());
        }
        let ok = Self::expect_valid("open", code)?;
        self.counters.create_out_of_memory += u64::from(!ok);
        if !ok {
            return Ok(());
        }
        let Ok(id) = r else { return Ok(()) };
        self.counters.opened += 1;
        self.counters.opened_bound += u64::from(backing != Backing::Anonymous);
        self.counters.opened_superpages += u64::from(backing == Backing::Superpages);
        self.counters.opened_fixed += u64::from(fixed);
        self.counters.opened_other_pool += u64::from(pool != PoolId::DEFAULT);
        self.dataspaces.push(ModelDataspace {
            id,
            bytes: vec![0; size as usize],
            owner,
            open: true,
            pool,
            superpages: backing == Backing::Superpages,
        });
        Ok(())
    }

    pub(super) fn resize(&mut self, ds: u8, size: u8, caller: u8) -> Check {
        let Some(id) = self.pick(ds) else { return Ok(()) };
        let new = size_of_code(size);
        let caller = CLIENTS[caller as usize % CLIENTS.len()];
        if self.skips.superpage_shrink
            && self
                .ds_index(id)
                .is_some_and(|i| self.dataspaces[i].superpages && new < self.dataspaces[i].bytes.len() as u64)
        {
            self.counters.skipped += 1;
            return Ok(());
        }
        if self.skips.shrink_into_page
            && self.ds_index(id).is_some_and(|i| new < self.dataspaces[i].bytes.len() as u64)
            && !new.is_multiple_of(PAGE)
        {
            self.counters.skipped += 1;
            return Ok(());
        }
        let r = self.target.manager(|m, rv| m.resize(caller, id, new, rv)).map_err(|e| e.code());
        let Some(i) = self.ds_index(id).filter(|&i| self.dataspaces[i].open) else {
            return self.expect_refused("resize of a closed dataspace", r);
        };
        if self.dataspaces[i].owner != caller {
            return self.expect_refused("resize by another client", r);
        }
        let ok = Self::expect_valid("resize", r)?;
        self.counters.resize_out_of_memory += u64::from(!ok);
        if !ok {
            return Ok(());
        }
        let d = &mut self.dataspaces[i];
        if new == 0 {
            d.open = false;
            self.counters.closed += 1;
            self.collect(id);
            return Ok(());
        }
        let old = d.bytes.len() as u64;
        if new < old {
            self.counters.resized_down += 1;
            self.counters.resized_superpages_down += u64::from(d.superpages);
        } else if new > old {
            self.counters.resized_up += 1;
        }
        d.bytes.resize(new as usize, 0);
        Ok(())
    }

    pub(super) fn copy(&mut self, ds: u8, src: u8, dst: u8, len: u8, flags: u8, caller: u8) -> Check {
        self.make_room()?;
        let Some(id) = self.pick(ds) else { return Ok(()) };
        if self.dataspaces.len() >= MAX_DATASPACES {
            self.counters.skipped_full += 1;
            return Ok(());
        }
        let caller = CLIENTS[caller as usize % CLIENTS.len()];
        let src_offs = OFFSETS[src as usize % OFFSETS.len()];
        let dst_offs = OFFSETS[dst as usize % OFFSETS.len()];
        let src_size = self.ds_index(id).map_or(0, |i| self.dataspaces[i].bytes.len() as u64);
        let num = match len {
            0 => CopyLength::WholeDataspace,
            1 => CopyLength::Bytes(0),
            n => {
                let n = size_of_code(n - 2);
                // Mostly within the source (bit 5 asks for the length as drawn).
                CopyLength::Bytes(if flags & 0x20 == 0 { n.min(src_size.saturating_sub(src_offs)) } else { n })
            }
        };
        if self.skips.zero_length_copy
            && dst_offs > 0
            && (num == CopyLength::Bytes(0) || (num == CopyLength::WholeDataspace && src_offs >= src_size))
        {
            self.counters.skipped += 1;
            return Ok(());
        }
        if self.skips.cow_partial_tail && flags & 1 != 0 {
            let n = match num {
                CopyLength::WholeDataspace => src_size.saturating_sub(src_offs),
                CopyLength::Bytes(n) => n,
            };
            if !(dst_offs + n).is_multiple_of(PAGE) && src_offs + n < src_size {
                self.counters.skipped += 1;
                return Ok(());
            }
        }
        let mut dm = DmFlags::empty();
        for (bit, f) in [(1, DmFlags::COW), (2, DmFlags::CONTIGUOUS), (4, DmFlags::PINNED), (8, DmFlags::SUPERPAGES)] {
            if flags & bit != 0 {
                dm |= f;
            }
        }
        let other_pool = flags & 0x10 != 0;
        let src_pool = self.ds_index(id).map_or(PoolId::DEFAULT, |i| self.dataspaces[i].pool);
        let dst_pool = if other_pool { self.pool_of(flags.wrapping_add(src)).0 } else { src_pool };
        let shared_before = self.target.manager(|m, _| m.shared_frames());
        let r = self.target.manager(|m, rv| {
            if other_pool {
                let p = dst_pool.index() as u32;
                m.memphys_copy(
                    caller,
                    id,
                    MemphysCopyRequest::new(src_offs, dst_offs, num, p).flags(dm).name("pcopy"),
                    rv,
                )
            } else if src_offs == 0 && dst_offs == 0 && num == CopyLength::WholeDataspace {
                m.copy(caller, id, dm, "copy", rv)
            } else {
                m.copy_long(caller, id, CopyRequest::new(src_offs, dst_offs, num).flags(dm).name("copy_long"), rv)
            }
        });
        let code = r.as_ref().map(|_| ()).map_err(|e| e.code());
        let Some(i) = self.ds_index(id).filter(|&i| self.dataspaces[i].open) else {
            return self.expect_refused("copy of a closed dataspace", code);
        };
        let s = &self.dataspaces[i];
        if s.owner.task != caller.task {
            return self.expect_refused("copy by another task", code);
        }
        let n = match num {
            CopyLength::WholeDataspace => src_size.checked_sub(src_offs),
            CopyLength::Bytes(n) => src_offs.checked_add(n).filter(|e| *e <= src_size).map(|_| n),
        };
        let Some(n) = n else { return self.expect_refused("copy from past the source's end", code) };
        let total = dst_offs + n;
        if total == 0 {
            return self.expect_refused("copy of 0 bytes to offset 0", code);
        }
        let ok = Self::expect_valid("copy", code)?;
        self.counters.copy_out_of_memory += u64::from(!ok);
        if !ok {
            return Ok(());
        }
        let Ok(copy) = r else { return Ok(()) };
        let mut bytes = vec![0u8; dst_offs as usize];
        bytes.extend_from_slice(&s.bytes[src_offs as usize..(src_offs + n) as usize]);
        self.counters.copies += 1;
        self.counters.zero_length_copies += u64::from(n == 0);
        if self.target.manager(|m, _| m.shared_frames()) > shared_before {
            self.counters.cow_copies_sharing += 1;
        }
        if dm.contains(DmFlags::COW) {
            self.counters.cow_copies += 1;
            self.counters.cow_copies_partial_tail += u64::from(src_offs + n < src_size && !total.is_multiple_of(PAGE));
        }
        self.dataspaces.push(ModelDataspace {
            id: copy,
            bytes,
            owner: caller,
            open: true,
            pool: dst_pool,
            superpages: dm.contains(DmFlags::SUPERPAGES),
        });
        Ok(())
    }

    pub(super) fn close(&mut self, ds: u8, caller: u8) -> Check {
        let Some(id) = self.pick(ds) else { return Ok(()) };
        let caller = CLIENTS[caller as usize % CLIENTS.len()];
        let r = self.target.manager(|m, _| m.close(caller, id)).map_err(|e| e.code());
        let Some(i) = self.ds_index(id).filter(|&i| self.dataspaces[i].open) else {
            return self.expect_refused("close of a closed dataspace", r);
        };
        if self.dataspaces[i].owner != caller {
            return self.expect_refused("close by another client", r);
        }
        if let Err(c) = r {
            return fail(format!("close: refused with code {c}"));
        }
        self.dataspaces[i].open = false;
        self.counters.closed += 1;
        self.counters.closed_while_attached += u64::from(self.referenced(id));
        self.collect(id);
        Ok(())
    }

    pub(super) fn close_all(&mut self, caller: u8, client: u8, same_task: bool) -> Check {
        let caller = CLIENTS[caller as usize % CLIENTS.len()];
        let client = CLIENTS[client as usize % CLIENTS.len()];
        let flags = if same_task { DmFlags::SAME_TASK } else { DmFlags::empty() };
        let r = self.target.manager(|m, _| m.close_all(caller, client, flags));
        if caller.task != client.task {
            return self.expect_refused("close_all of another task", r.map(|_| ()).map_err(|e| e.code()));
        }
        let n = r.map_err(|e| format!("close_all refused: {e}"))?;
        let hit =
            |d: &ModelDataspace| d.open && if same_task { d.owner.task == client.task } else { d.owner == client };
        let ids: Vec<DataspaceId> = self.dataspaces.iter().filter(|d| hit(d)).map(|d| d.id).collect();
        if n as usize != ids.len() {
            return fail(format!("close_all closed {n}, the model {}", ids.len()));
        }
        for id in ids {
            if let Some(i) = self.ds_index(id) {
                self.dataspaces[i].open = false;
            }
            self.collect(id);
        }
        self.counters.close_all += 1;
        Ok(())
    }

    pub(super) fn write(&mut self, ds: u8, at: u16, len: u8, value: u8) -> Check {
        let Some(id) = self.pick(ds) else { return Ok(()) };
        let size = self.ds_index(id).map_or(0, |i| self.dataspaces[i].bytes.len() as u64);
        let at = u64::from(at) % (size + 2);
        let buf: Vec<u8> = (0..=len).map(|i| value.wrapping_add(i)).collect();
        let shared = self.target.manager(|m, _| m.shared_frames());
        let r = self.target.manager(|m, rv| m.write(id, at, &buf, rv)).map_err(|e| e.code());
        if self.target.manager(|m, _| m.shared_frames()) < shared {
            self.counters.cow_breaks += 1;
        }
        let Some(i) = self.ds_index(id) else { return self.expect_refused("write to a freed dataspace", r) };
        if at + buf.len() as u64 > size {
            return self.expect_refused("write past the end", r);
        }
        if Self::expect_valid("write", r)? {
            self.counters.manager_writes += 1;
            self.dataspaces[i].bytes[at as usize..at as usize + buf.len()].copy_from_slice(&buf);
        } else {
            self.counters.write_out_of_memory += 1;
            if self.skips.partial_write {
                let mut now = vec![0u8; size as usize];
                self.target.manager(|m, _| m.read(id, 0, &mut now)).map_err(|e| format!("read: {e}"))?;
                self.dataspaces[i].bytes = now;
            }
        }
        Ok(())
    }

    pub(super) fn hog(&mut self, pool: u8, leave: u8) -> Check {
        if self.skips.hosted_dry_access {
            self.counters.skipped += 1;
            return Ok(());
        }
        let (pool, _, _) = self.pool_of(pool);
        let leave = u64::from(leave % 4);
        let taken = self.target.manager(|m, _| {
            let mut taken = Vec::new();
            if let Some(src) = m.pool(pool) {
                while src.free_frames().get() > leave {
                    match src.allocate(FrameCount::new(1), Order::ZERO, None) {
                        Ok(f) => taken.push(f),
                        Err(_) => break,
                    }
                }
            }
            taken
        });
        self.counters.hogs += 1;
        self.hogged.extend(taken.into_iter().map(|f| (pool, f)));
        Ok(())
    }

    pub(super) fn unhog(&mut self, every: u8) -> Check {
        let every = usize::from(every % 4);
        let (give, keep): (Vec<_>, Vec<_>) = core::mem::take(&mut self.hogged)
            .into_iter()
            .enumerate()
            .partition(|(i, _)| every == 0 || i % (every + 1) == 0);
        self.hogged = keep.into_iter().map(|(_, x)| x).collect();
        self.target.manager(|m, _| {
            for (_, (pool, f)) in give {
                if let Some(src) = m.pool(pool) {
                    src.free(f, FrameCount::new(1)).map_err(|e| format!("giving back a hogged frame: {e}"))?;
                }
            }
            Ok(())
        })
    }
}
