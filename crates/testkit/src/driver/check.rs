//! The driver's check after every action: everything the system shows against the model.

use super::*;

impl<T: Target> Driver<T> {
    // ------------------------------------------------------------------ the check

    /// Compares everything the system shows with the model.
    pub(super) fn check_all(&mut self) -> Check {
        self.target.check_invariants();
        // Every dataspace through the manager.
        for d in &self.dataspaces {
            let size = d.bytes.len() as u64;
            let info = self.target.manager(|m, _| m.info(d.id).map(|i| (i.size, i.owner)).ok());
            match (d.open, info) {
                (true, Some((s, o))) if s == size && o == d.owner => {}
                (true, i) => return fail(format!("info({}) is {i:?}, the model ({size}, {})", d.id, d.owner)),
                (false, Some(_)) => return fail(format!("info({}) answers for a closed dataspace", d.id)),
                (false, None) => {}
            }
            let mut buf = vec![0u8; size as usize];
            self.target.manager(|m, _| m.read(d.id, 0, &mut buf)).map_err(|e| format!("read of {}: {e}", d.id))?;
            if let Some(k) = (0..buf.len()).find(|&k| buf[k] != d.bytes[k]) {
                return fail(format!(
                    "manager read of {} at {k:#x} (size {size:#x}): {:#04x}, the model {:#04x}",
                    d.id, buf[k], d.bytes[k]
                ));
            }
            let past = self.target.manager(|m, _| m.read(d.id, size, &mut [0u8]).is_ok());
            if past {
                return fail(format!("manager read of {} at its size {size:#x} succeeded", d.id));
            }
        }
        for id in &self.dead {
            if self.target.manager(|m, _| m.info(*id).is_ok()) {
                return fail(format!("info({id}) answers for a freed dataspace"));
            }
        }
        // Every page of every region, through the translation the CPU would use.
        let mut frames: BTreeMap<(DataspaceId, u64), Frame> = BTreeMap::new();
        let mut users: BTreeMap<Frame, Vec<(DataspaceId, u64, bool)>> = BTreeMap::new();
        let mut page_buf = vec![0u8; PAGE_SIZE];
        for s in 0..self.regions.len() {
            for ri in 0..self.regions[s].len() {
                let r = self.regions[s][ri];
                for p in 0..r.pages {
                    let addr = r.start + p * PAGE_SIZE;
                    let Some(t) = self.target.translation(s, Page::containing_address(VirtAddr::new(addr))) else {
                        continue;
                    };
                    let d = self.ds(r.ds);
                    let off = r.offset + (p * PAGE_SIZE) as u64;
                    let dpage = off / PAGE;
                    if dpage >= d.pages() {
                        return fail(format!(
                            "space {s} maps {addr:#x} (dataspace {} page {dpage}) past the dataspace's end ({:#x} bytes)",
                            r.ds,
                            d.bytes.len()
                        ));
                    }
                    if !r.rights.contains(t.rights) {
                        return fail(format!(
                            "space {s} maps {addr:#x} with {:?} beyond the region's {:?}",
                            t.rights, r.rights
                        ));
                    }
                    if let Some(f) = frames.insert((r.ds, dpage), t.frame)
                        && f != t.frame
                    {
                        return fail(format!(
                            "dataspace {} page {dpage} is mapped to two frames ({:#x} and {:#x}): one is stale",
                            r.ds,
                            f.number(),
                            t.frame.number()
                        ));
                    }
                    users.entry(t.frame).or_default().push((r.ds, dpage, t.rights.contains(Rights::WRITE)));
                    if !t.rights.contains(Rights::READ) {
                        continue;
                    }
                    self.target.read_mapped(s, VirtAddr::new(addr), &mut page_buf);
                    self.counters.pages_compared += 1;
                    let size = self.ds(r.ds).bytes.len() as u64;
                    self.counters.partial_tail_pages_compared += u64::from(off + PAGE > size);
                    let d = self.ds(r.ds);
                    for (k, &b) in page_buf.iter().enumerate() {
                        let o = off + k as u64;
                        if b != d.byte(o) && !(self.skips.tail_bytes && o >= size) {
                            return fail(format!(
                                "space {s} at {:#x} (dataspace {} offset {o:#x}, size {size:#x}, frame {:#x}) reads {b:#04x}, the model {:#04x}{}",
                                addr + k,
                                r.ds,
                                t.frame.number(),
                                d.byte(o),
                                if o >= size { " (past the dataspace's end)" } else { "" }
                            ));
                        }
                    }
                }
            }
        }
        for (f, u) in &users {
            let first = (u[0].0, u[0].1);
            if u.iter().any(|x| (x.0, x.1) != first) {
                self.counters.shared_pages_compared += 1;
                if u.iter().any(|x| x.2) {
                    return fail(format!(
                        "frame {:#x} is mapped writable while it backs several dataspace pages: {u:?}",
                        f.number()
                    ));
                }
            }
        }
        // Frames: the pools' use is the dataspaces' frames plus the hogged ones.
        for &(pool, _, _) in &self.pools {
            let hogged = self.hogged.iter().filter(|h| h.0 == pool).count() as u64;
            let (used, held) = self.target.manager(|m, _| {
                let s = m.pool(pool).expect("a pool the target listed");
                (s.total_frames().get() - s.free_frames().get(), m.frames_held(pool))
            });
            if used != held + hogged {
                return fail(format!(
                    "pool {} has {used} frames in use, dataspaces hold {held} and the driver {hogged}",
                    pool.index()
                ));
            }
        }
        Ok(())
    }
}
