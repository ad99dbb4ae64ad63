use std::time::Duration;

use vesta_proto::{CloneRecords, Reply, Status};

use crate::node::{Need, StoreNode};

impl StoreNode {
    /// Installs copies sent by another node (redistribution, forwarding, zone repair), each only if newer
    /// than this node's copy. A key under a coordinator's lease is retried for up to a lease: the copy
    /// must land, but never between that coordinator's prepare and commit.
    pub(crate) async fn clone_records(&self, c: CloneRecords) -> Reply {
        for (target, record) in c.items {
            let skey = match self.locate_for(&target, Need::Hold) {
                Ok(k) => k,
                Err(reply) => return reply,
            };
            let mut waited = 0;
            loop {
                let reply = self.install_if_newer(c.req, skey.clone(), record.clone()).await;
                match reply.status {
                    Status::Ok | Status::AlreadyDone | Status::ConditionFailed => break,
                    Status::Locked if waited < self.settings.lease_ms => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        waited += 5;
                    }
                    _ => return reply,
                }
            }
        }
        Reply::status(Status::Ok)
    }
}
