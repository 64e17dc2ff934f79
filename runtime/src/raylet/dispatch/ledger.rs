//! The local resource ledger (D-1): what a task or actor takes when it is
//! dispatched and gives back once when it ends — from the node, or from its
//! placement-group bundle when it runs inside one.

use super::bundles::bundle_of;
use super::Dispatcher;
use crate::proto::task::WireStrategy;
use prism_scheduler::{AllocError, Quantity, ResourceSet};

impl Dispatcher {
    /// Whether `request` fits now in the ledger its strategy draws from.
    pub(super) fn fits(&self, strategy: &WireStrategy, request: &ResourceSet) -> bool {
        match bundle_of(strategy) {
            Some(k) => self
                .bundles
                .get(&k)
                .is_some_and(|b| b.committed && b.ledger.fits_now(request)),
            None => self.local.fits_now(request) && self.beside_held_back(request),
        }
    }

    /// L-3: whether `request` leaves what a refused bundle waits for.
    fn beside_held_back(&self, request: &ResourceSet) -> bool {
        let Some(kept) = self.held_back_free() else {
            return true;
        };
        let mut left = self.local.available().clone();
        left.subtract(&kept);
        request.fits_in(&left)
    }

    /// Takes `request` from the node or from its bundle; GPU indices are
    /// always the node's.
    pub(super) fn take(
        &mut self,
        strategy: &WireStrategy,
        request: &ResourceSet,
    ) -> Result<Vec<(u32, Quantity)>, AllocError> {
        let Some(k) = bundle_of(strategy) else {
            return self.local.allocate(request);
        };
        let b = self.bundles.get_mut(&k).ok_or(AllocError::NodeDead)?;
        let inner = b.ledger.allocate(request)?;
        Ok(inner
            .into_iter()
            .map(|(i, q)| {
                let node = b.node_gpus.get(i as usize).map_or(i, |g| g.0);
                (node, q)
            })
            .collect())
    }

    /// Gives back what [`Dispatcher::take`] took. A bundle already returned
    /// took its node resources back whole, so there is nothing to do.
    pub(super) fn give_back(
        &mut self,
        strategy: &WireStrategy,
        held: &ResourceSet,
        gpus: &[(u32, Quantity)],
    ) {
        let result = match bundle_of(strategy) {
            None => self.local.release(held, gpus),
            Some(k) => match self.bundles.get_mut(&k) {
                None => Ok(()),
                Some(b) => {
                    let inner: Vec<(u32, Quantity)> = gpus
                        .iter()
                        .map(|(node, q)| {
                            let i = b.node_gpus.iter().position(|g| g.0 == *node);
                            (i.map_or(*node, |i| i as u32), *q)
                        })
                        .collect();
                    b.ledger.release(held, &inner)
                }
            },
        };
        if let Err(e) = result {
            tracing::error!("resource ledger: {e}");
        }
    }
}
