use vesta_proto::{Repair, Reply};

use crate::node::{Need, StoreNode};

impl StoreNode {
    /// Installs a newer copy that this replica missed (read repair, or a commit that failed here). The
    /// copy keeps its original last writer: it is that request's write, arriving late.
    pub(crate) async fn repair(&self, r: Repair) -> Reply {
        match self.locate_for(&r.target, Need::Hold) {
            Ok(skey) => self.install_if_newer(r.req, skey, r.record).await,
            Err(reply) => reply,
        }
    }
}
