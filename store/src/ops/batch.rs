use std::time::Instant;

use vesta_proto::{Reply, Request, Response, Status};

use crate::lease::Pinned;
use crate::metrics as m;
use crate::node::StoreNode;

impl StoreNode {
    /// The key operations of concurrent commands, handled as one batch: each prepare, abort and read
    /// as if it came alone, in order, and every commit staged (lease claimed, checks made) and then
    /// written in one engine write — one WAL append for the batch instead of one per commit, which is
    /// what a pipeline of writes costs a node. Answers one response per request, in order.
    ///
    /// Order within the batch is the order of arrival, as for separate requests: a prepare after a
    /// commit of the same key finds that commit's lease pinned until the write has landed (`Locked`),
    /// never the copy before it.
    pub(crate) async fn batch(&self, requests: Vec<Request>) -> Vec<Response> {
        let started = Instant::now();
        let mut responses: Vec<Option<Response>> = Vec::with_capacity(requests.len());
        // The commits staged for the one write: their places in `responses`, and whether each is logged.
        let mut staged: Vec<(usize, bool)> = Vec::new();
        let mut mutations = Vec::new();
        let mut pinned = Pinned::new(self.leases.clone(), Vec::new(), Default::default());
        let mut kinds = Vec::with_capacity(requests.len());
        for request in requests {
            kinds.push(request.kind());
            let answered = match request {
                Request::Commit(c) => match self.stage_commit(c) {
                    Ok(commit) => {
                        staged.push((responses.len(), commit.logged));
                        mutations.extend(commit.mutations);
                        pinned.absorb(commit.pinned);
                        None
                    }
                    Err(reply) => Some(reply),
                },
                other => Some(self.answer_now(other).unwrap_or_else(|other| {
                    Reply::error(Status::BadRequest, format!("a {} request cannot travel in a batch", other.kind()))
                })),
            };
            responses.push(answered.map(Response::Reply));
        }
        if !staged.is_empty() {
            let written = match self.store_all(mutations, &mut pinned).await {
                Ok(()) => Reply::status(Status::Ok),
                Err(reply) => reply,
            };
            let logged = staged.iter().filter(|(_, logged)| *logged).count();
            if written.status == Status::Ok && logged > 0 {
                metrics::counter!(m::CHANGELOG_WRITTEN).increment(logged as u64);
            }
            for (at, _) in &staged {
                responses[*at] = Some(Response::Reply(written.clone()));
            }
        }
        drop(pinned);
        metrics::histogram!(m::BATCH_REQUESTS).record(kinds.len() as f64);
        let took = started.elapsed().as_secs_f64();
        responses
            .into_iter()
            .zip(kinds)
            .map(|(response, op)| {
                let response = response.unwrap_or_else(|| Response::Reply(Reply::status(Status::Internal)));
                metrics::counter!(m::OPERATIONS, "op" => op, "status" => response.status().as_str()).increment(1);
                metrics::histogram!(m::OPERATION_SECONDS, "op" => op).record(took);
                response
            })
            .collect()
    }
}
