use vesta_proto::{RebuildStep, Reply, Status};

use crate::metrics as m;
use crate::node::StoreNode;

impl StoreNode {
    /// The node's side of a full repair (see [`RebuildStep`]): stop serving, clear shards so that the
    /// other zones' copies replace them whole, serve again.
    pub(crate) async fn rebuild(&self, step: RebuildStep) -> Reply {
        let result = match step {
            RebuildStep::Begin => {
                tracing::warn!(node = %self.settings.name, "full repair begins: serving nothing until it ends");
                self.store_unleased(vec![self.service.begin_rebuild()]).await
            }
            RebuildStep::ClearShard(shard) if shard >= self.settings.shards => {
                return Reply::error(Status::BadRequest, format!("no shard {shard}"));
            }
            RebuildStep::ClearShard(shard) => {
                if self.service.needs_repair().is_none() {
                    return Reply::error(
                        Status::BadRequest,
                        "refusing to clear a shard of a replica in service: begin a full repair first",
                    );
                }
                self.drop_shard(shard).await.map(|_| ()).map_err(|e| Reply::error(Status::Internal, e))
            }
            RebuildStep::Finish => {
                tracing::info!(node = %self.settings.name, "full repair done: serving again");
                self.store_unleased(self.service.rebuilt(self.clock.wall_ms())).await
            }
        };
        metrics::gauge!(m::NEEDS_REPAIR).set(self.service.needs_repair().is_some() as u8 as f64);
        match result {
            Ok(()) => Reply::status(Status::Ok),
            Err(reply) => reply,
        }
    }
}
