//! The handlers of the kernel heaps: `xmalloc`, `xmfree` and `heaps`.

use memkit_heap::HeapId;

use super::parse::narrow;
use super::{Command, Res, Session};

fn heap_of(name: Option<&str>) -> Res<HeapId> {
    Ok(match name.unwrap_or("kernel") {
        "kernel" => HeapId::Kernel,
        "pinned" => HeapId::Pinned,
        "kernel4k" => HeapId::Kernel4K64K,
        "kernel16m" => HeapId::Kernel16M,
        "pinned4k" => HeapId::Pinned4K64K,
        "pinned16m" => HeapId::Pinned16M,
        other => return Err(format!("no heap '{other}'")),
    })
}

impl Session<'_> {
    pub(super) fn op_xmalloc(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let size: usize = narrow(a.number(1)?, "SIZE")?;
        let align = u32::from(a.align(3)?);
        let heap = heap_of(a.option_text("heap")?)?;
        let ptr = self.h.heaps().try_xmalloc(size, align, heap).map_err(|e| e.to_string())?;
        self.names.blocks.insert(name.to_string(), (ptr, heap, false));
        Ok(())
    }

    pub(super) fn op_xmfree(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let &(ptr, heap, freed) = self.names.blocks.get(name).ok_or_else(|| format!("no block '{name}'"))?;
        if freed {
            // The name stays so that this is an error; the block may be someone else's now.
            return Err(format!("block '{name}' was freed already"));
        }
        self.h.heaps().xmfree(ptr, heap).map_err(|e| e.to_string())?;
        if let Some(entry) = self.names.blocks.get_mut(name) {
            entry.2 = true;
        }
        Ok(())
    }

    pub(super) fn op_heaps(&mut self, _: &Command) -> Res {
        let report = self.h.heap_report();
        self.out.push(report);
        Ok(())
    }
}
