//! A pipeline's independent single-key commands, gathered while its connection parses them and run as
//! one group: the writes through [`Coordinator::write_group`] (one round of prepares and one of commits
//! per store node for the lot), the reads through [`Coordinator::read_group`] (one batch of reads per
//! node), in one task — instead of a round, a batch and a task each.
//!
//! A command is gathered only when nothing earlier on its connection touches its key (it would wait
//! for that command: see `KeyOrder`) and the admission gate lets it in at once; each keeps its own slot
//! of the gate, its own key-order signal and its own reply. What one parsing pass gathered starts when
//! the pass ends (or when the group is full). A lone command — a client that does not pipeline — is not
//! gathered: it runs on its own way, through [`Coordinator::write`] or [`Coordinator::read`].
//!
//! [`Coordinator::write_group`]: crate::coordinator::Coordinator::write_group
//! [`Coordinator::read_group`]: crate::coordinator::Coordinator::read_group
//! [`Coordinator::write`]: crate::coordinator::Coordinator::write
//! [`Coordinator::read`]: crate::coordinator::Coordinator::read

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use super::{encoded_len, Done, Pending, Proxy};
use crate::admission::Permit;
use crate::clients::Client;
use crate::cmd;
use crate::cmd::DataCommand;
use crate::coordinator::{Coordinator, KeyName, KeyWrite};
use crate::metrics as m;
use crate::resp::Reply;

/// Most commands one group takes: every one of them waits for the slowest.
const MAX_COMMANDS: usize = 64;

/// Largest command (its arguments' bytes) that is gathered: a group's commits travel to a node in one
/// frame, which stays about a MiB at most (well under a node's frame limit). Larger writes run alone.
const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// What a gathered command does to its key.
pub(super) enum Op {
    Write(KeyWrite),
    /// A read of `key`, answered by `command` (of the connection's `namespace`) on the key's newest
    /// live copy.
    Read {
        command: DataCommand,
        key: KeyName,
        namespace: Bytes,
    },
}

impl Op {
    /// A command of one key, `key`, run in the connection's `namespace`.
    pub(super) fn of(command: DataCommand, namespace: Bytes, key: KeyName) -> Op {
        match command.into_key_write(namespace.clone(), vec![key.clone()]) {
            Ok(write) => Op::Write(write),
            Err((command, _)) => Op::Read { command, key, namespace },
        }
    }

    /// Runs the command on its own (not gathered: it waits in the admission gate's queue first).
    pub(super) async fn run_alone(self, coordinator: Arc<Coordinator>) -> Reply {
        match self {
            Op::Write(w) => coordinator
                .write(&w.namespace, &w.key, w.kind, w.want_value, w.decide)
                .await
                .unwrap_or_else(|e| e.reply()),
            Op::Read { command, namespace, .. } => command.execute(coordinator, namespace).await,
        }
    }
}

/// A gathered command, and what its reply needs once the group has run.
pub(super) struct Gathered {
    pub op: Op,
    pub resp3: bool,
    pub spec: &'static cmd::Spec,
    pub args: Vec<Bytes>,
    /// Dropped once it has finished: later commands of the connection on its key go on.
    pub done: watch::Sender<()>,
    /// Its slot of the admission gate.
    pub permit: Permit,
    /// When it was parsed.
    pub started: Instant,
}

/// The commands gathered in the current parsing pass.
#[derive(Default)]
pub(super) struct Gather {
    commands: Vec<(Gathered, oneshot::Sender<Done>)>,
    /// More of the pass's input is left to parse after the command being dispatched.
    more: bool,
}

impl Gather {
    /// Whether a command of these arguments may be gathered.
    pub(super) fn takes(args: &[Bytes]) -> bool {
        args.iter().map(Bytes::len).sum::<usize>() <= MAX_COMMAND_BYTES
    }

    /// Tells whether more input is left to parse after the command about to be dispatched.
    pub(super) fn more_follow(&mut self, more: bool) {
        self.more = more;
    }

    /// Whether a command dispatched now would be its group's only one: nothing gathered before it in
    /// this pass, nothing left to parse after it (a client that does not pipeline). Such a command is
    /// not gathered: a group of one would cost a channel, the group's vectors and a box more than the
    /// command's own way.
    pub(super) fn alone(&self) -> bool {
        self.commands.is_empty() && !self.more
    }

    /// Gathers a command; its reply comes once its group has run.
    pub(super) fn push(&mut self, proxy: &Arc<Proxy>, me: &Arc<Client>, command: Gathered) -> Pending {
        let resp3 = command.resp3;
        let (tx, rx) = oneshot::channel();
        self.commands.push((command, tx));
        if self.commands.len() >= MAX_COMMANDS {
            self.start(proxy, me);
        }
        let me = me.clone();
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                tracing::error!("a group of commands failed");
                let reply = Reply::error("ERR internal error while running the command");
                let counted = encoded_len(&reply);
                me.reply_finished(counted, 0);
                Done { resp3, reply, counted }
            })
        })
    }

    /// Starts what was gathered, as one task: one write alone runs through [`Coordinator::write`]
    /// (where it may ride along with other writers of its key), more through
    /// [`Coordinator::write_group`]; reads likewise through [`Coordinator::read`] or
    /// [`Coordinator::read_group`].
    ///
    /// [`Coordinator::write`]: crate::coordinator::Coordinator::write
    /// [`Coordinator::write_group`]: crate::coordinator::Coordinator::write_group
    /// [`Coordinator::read`]: crate::coordinator::Coordinator::read
    /// [`Coordinator::read_group`]: crate::coordinator::Coordinator::read_group
    pub(super) fn start(&mut self, proxy: &Arc<Proxy>, me: &Arc<Client>) {
        if self.commands.is_empty() {
            return;
        }
        let gathered = std::mem::take(&mut self.commands);
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        let mut answers = Vec::with_capacity(gathered.len());
        for (at, (g, tx)) in gathered.into_iter().enumerate() {
            let Gathered { op, resp3, spec, args, done, permit, started } = g;
            match op {
                Op::Write(write) => writes.push((at, write)),
                Op::Read { command, key, namespace } => reads.push((at, command, key, namespace)),
            }
            answers.push((resp3, spec, args, done, permit, started, tx));
        }
        // The work (a two-phase commit's future is KiBs) is boxed once here, so that the task's own
        // future stays small as it moves.
        let coordinator = proxy.coordinator.clone();
        let run: Pin<Box<dyn Future<Output = Vec<(usize, Reply)>> + Send>> = match (writes.is_empty(), reads.is_empty())
        {
            (false, true) => Box::pin(run_writes(coordinator, writes)),
            (true, false) => Box::pin(run_reads(coordinator, reads)),
            _ => Box::pin(async move {
                let (mut replies, read) =
                    futures::future::join(run_writes(coordinator.clone(), writes), run_reads(coordinator, reads)).await;
                replies.extend(read);
                replies
            }),
        };
        let (proxy, client) = (proxy.clone(), me.clone());
        tokio::spawn(async move {
            let running = Instant::now();
            let mut replies: Vec<Option<Reply>> = answers.iter().map(|_| None).collect();
            for (at, reply) in run.await {
                replies[at] = Some(reply);
            }
            let took = running.elapsed();
            let hard = proxy.shared.edge.output_limit().hard;
            for ((resp3, spec, args, done, permit, started, tx), reply) in answers.into_iter().zip(replies) {
                let reply = reply.unwrap_or_else(|| Reply::error("ERR internal error while running the command"));
                drop(permit);
                proxy.shared.command_took(took, spec, &args, &client);
                drop(done);
                metrics::histogram!(m::COMMAND_SECONDS, "cmd" => spec.name).record(started.elapsed().as_secs_f64());
                let counted = encoded_len(&reply);
                client.reply_finished(counted, hard);
                // The connection may be gone; its replies with it.
                let _ = tx.send(Done { resp3, reply, counted });
            }
        });
    }
}

/// The gathered writes (with their places among the group's replies): alone or as a group.
async fn run_writes(coordinator: Arc<Coordinator>, writes: Vec<(usize, KeyWrite)>) -> Vec<(usize, Reply)> {
    let (places, writes): (Vec<usize>, Vec<KeyWrite>) = writes.into_iter().unzip();
    let results = match <[KeyWrite; 1]>::try_from(writes) {
        Ok([w]) => vec![coordinator.write(&w.namespace, &w.key, w.kind, w.want_value, w.decide).await],
        Err(writes) if writes.is_empty() => Vec::new(),
        Err(writes) => {
            metrics::histogram!(m::GROUPED, "op" => "write").record(writes.len() as f64);
            coordinator.write_group(writes).await
        }
    };
    places.into_iter().zip(results.into_iter().map(|r| r.unwrap_or_else(|e| e.reply()))).collect()
}

/// The gathered reads (with their places among the group's replies): alone or as a group.
async fn run_reads(
    coordinator: Arc<Coordinator>,
    reads: Vec<(usize, DataCommand, KeyName, Bytes)>,
) -> Vec<(usize, Reply)> {
    if reads.len() <= 1 {
        let mut done = Vec::new();
        for (at, command, _, namespace) in reads {
            done.push((at, command.execute(coordinator.clone(), namespace).await));
        }
        return done;
    }
    metrics::histogram!(m::GROUPED, "op" => "read").record(reads.len() as f64);
    let keys = reads.iter().map(|(_, _, k, _)| (k.namespace.clone(), k.key.clone())).collect();
    let copies = coordinator.read_group(keys).await;
    let now = coordinator.now_ms();
    reads
        .into_iter()
        .zip(copies)
        .map(|((at, command, key, namespace), copy)| {
            let reply = match copy {
                Ok(copy) => command.answer_read(namespace, key, copy, now),
                Err(e) => e.reply(),
            };
            (at, reply)
        })
        .collect()
}
