//! A pipeline stage: an actor holding a contiguous run of the MLP's layers,
//! the activations of the micro-batches in flight (until their backward),
//! its gradients (accumulated over a batch's micro-batches) and its
//! optimizer. With data-parallel replicas, the replicas of one stage form
//! a ring and average their gradients through it before each step.

use super::act::Act;
use super::clock::Clock;
use super::links::{self, Links};
use super::mlp_pass::MlpPass;
use crate::recipes::{self, MlpConfig};
use crate::train::ring::Parcel;
use crate::train::ring_member::{deliver_with, RingMember};
use crate::train::Sgd;
use prism::channel::ChannelSpec;
use prism::ActorHandle;
use std::collections::HashMap;
use std::time::Duration;
use tch::nn::{self, Module, VarStore};
use tch::Tensor;

/// What a stage is.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct StageSpec {
    /// The whole model's config (every stage starts from the same weights).
    pub config: Vec<u8>,
    /// A user model registered with `pipeline_model!` (else the MLP
    /// recipe's, cut at `first..end`).
    pub model: Option<String>,
    /// How many stages the model has.
    pub stages: u32,
    /// Its linear layers: `first..end` of the model's.
    pub first: u32,
    /// One past its last layer.
    pub end: u32,
    /// Micro-batches per batch (each one's loss weighs `1/m`).
    pub micro: u32,
    /// Its index (its position in the pipeline).
    pub index: u32,
    /// Which data-parallel replica of the pipeline it belongs to.
    pub replica: u32,
    /// How many replicas there are.
    pub replicas: u32,
    /// Where its checkpoints go (`<dir>/stage-<index>/`), if anywhere.
    pub checkpoint_dir: Option<String>,
    /// libtorch threads in the stage's process (0: libtorch's default).
    pub threads: i32,
    /// The MLP recipe's stages: whether weight gradients wait for the
    /// batch's last backward (GPipe; see `mlp_pass.rs`, MP-3).
    pub defer_weight_grads: bool,
}

/// One stage of a pipeline, in its own worker process.
#[prism::actor]
pub struct PipeStage {
    dir: Option<std::path::PathBuf>,
    vs: VarStore,
    net: nn::Sequential,
    /// The MLP recipe's stage, passes written out (a user model's go
    /// through autograd).
    fast: Option<MlpPass>,
    opt: Sgd,
    micro: u32,
    /// Micro-batch → (its input, made a leaf that wants a gradient; its output).
    alive: HashMap<u32, (Tensor, Tensor)>,
    peak: usize,
    /// The most bytes of activations held at once this batch (the MLP
    /// recipe's stages; 0 for a user model's).
    peak_bytes: u64,
    /// Time spent computing this batch (passes, loss, step): not waiting
    /// for a neighbour, nor passing tensors.
    busy: Duration,
    /// What `busy` is counted with.
    clock: Clock,
    replica: u32,
    replicas: u32,
    /// Its links to the same stage of the other replicas, and the ring
    /// over them (made at the first average and kept).
    member: RingMember,
    /// Channels to its neighbours on the same node, if linked.
    links: Links,
}

/// How long a replica waits for a neighbour's gradient piece.
const RING_TIMEOUT: Duration = Duration::from_secs(120);
/// Gradient buckets of the replicas' ring.
const RING_BUCKET: usize = 4 << 20;

/// Layers `first..end` of the MLP recipe's model, from the whole model's
/// starting weights.
fn mlp_stage(
    cfg: &MlpConfig,
    vs: &VarStore,
    first: u32,
    end: u32,
) -> Result<nn::Sequential, String> {
    let (full, _) = recipes::build(cfg);
    let layers = &cfg.layers;
    let mut net = nn::seq();
    for i in first as usize..end as usize {
        let p = vs.root() / format!("l{i}");
        net = net.add(nn::linear(p, layers[i], layers[i + 1], Default::default()));
        if i + 2 < layers.len() {
            net = net.add_fn(|x| x.relu());
        }
    }
    let from = full.variables();
    tch::no_grad(|| -> Result<(), String> {
        for (name, mut v) in vs.variables() {
            let src = from.get(&name).ok_or(format!("no weight {name}"))?;
            v.f_copy_(src).map_err(|e| e.to_string())?;
        }
        Ok(())
    })?;
    Ok(net)
}

impl PipeStage {
    fn build(spec: &StageSpec) -> Result<PipeStage, String> {
        let cfg = MlpConfig::from_bytes(&spec.config).map_err(|e| e.to_string())?;
        if spec.threads > 0 {
            tch::set_num_threads(spec.threads);
        }
        let vs = VarStore::new(tch::Device::Cpu);
        let net = match &spec.model {
            Some(name) => {
                let reg = super::model::find_model(name).map_err(|e| e.to_string())?;
                super::model::build_stage(reg, &vs, spec.index, spec.stages, cfg.seed)
            }
            None => mlp_stage(&cfg, &vs, spec.first, spec.end)?,
        };
        let dir = spec.checkpoint_dir.as_ref().map(|d| {
            let root = std::path::PathBuf::from(d);
            let _ = std::fs::create_dir_all(&root);
            // Operators (and tests) find each stage's process here.
            let pid_file = match spec.replica {
                0 => format!("stage-{}.pid", spec.index),
                r => format!("stage-{}-r{r}.pid", spec.index),
            };
            let _ = std::fs::write(root.join(pid_file), std::process::id().to_string());
            root.join(format!("stage-{}", spec.index))
        });
        let fast = spec.model.is_none().then(|| {
            let input_grad = spec.index > 0;
            let defer = spec.defer_weight_grads;
            MlpPass::new(
                &cfg.layers,
                spec.first,
                spec.end,
                input_grad,
                defer,
                spec.micro,
            )
        });
        Ok(PipeStage {
            dir,
            vs,
            net,
            fast,
            opt: Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay),
            micro: spec.micro.max(1),
            alive: HashMap::new(),
            peak: 0,
            peak_bytes: 0,
            busy: Duration::ZERO,
            clock: Clock::for_threads(tch::get_num_threads()),
            replica: spec.replica,
            replicas: spec.replicas.max(1),
            member: RingMember::default(),
            links: Links::default(),
        })
    }

    fn run_forward(&mut self, mb: u32, x: &Act) -> Result<Tensor, String> {
        self.forward_tensor(mb, x.tensor()?)
    }

    fn forward_tensor(&mut self, mb: u32, x: Tensor) -> Result<Tensor, String> {
        self.computing(|me| {
            if let Some(fast) = me.fast.as_mut() {
                let out = fast.forward(&me.vs, mb, x)?;
                me.peak = me.peak.max(fast.alive());
                me.peak_bytes = me.peak_bytes.max(fast.held_bytes());
                return Ok(out);
            }
            let input = x.set_requires_grad(true);
            let out = me.net.forward(&input);
            me.alive.insert(mb, (input, out.shallow_clone()));
            me.peak = me.peak.max(me.alive.len());
            Ok(out)
        })
    }

    /// Runs `f`, counting its time as this batch's computing (with one
    /// libtorch thread, the CPU time this thread spent in it: time it
    /// waited for a core, on a machine with more stages than cores, is
    /// not computing).
    fn computing<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let began = self.clock.now();
        let out = f(self);
        self.busy += self.clock.now().saturating_sub(began);
        out
    }

    /// Micro-batch `mb`'s backward, after its input's gradient went on:
    /// what it left to do (the MLP recipe's weight gradients).
    fn backward_done(&mut self, mb: u32) -> Result<(), String> {
        self.computing(|me| match me.fast.as_mut() {
            Some(fast) => fast.backward_done(&me.vs, mb),
            None => Ok(()),
        })
    }

    /// [`Self::backward_done`] for a backward answered as a call result
    /// (stages not linked by channels): with one replica, nothing reads
    /// the gradients before the step, so the batch's weight gradients wait
    /// for it and the answer the previous stage waits for goes out first.
    fn backward_answered(&mut self, mb: u32) -> Result<(), String> {
        let step_adds = self.replicas == 1 && self.fast.as_ref().is_some_and(|f| f.ends_batch(mb));
        if step_adds {
            return Ok(());
        }
        self.backward_done(mb)
    }

    /// Micro-batch `mb`'s backward from `grad`, its output's gradient
    /// (`None`: from its loss); its input's gradient (empty for the first
    /// stage of the MLP recipe's model: nobody needs it). Then
    /// [`Self::backward_done`].
    fn backward_of(&mut self, mb: u32, grad: Option<Tensor>) -> Result<Tensor, String> {
        self.computing(|me| {
            if let Some(fast) = me.fast.as_mut() {
                let input_grad = fast.backward(&me.vs, mb, grad)?;
                me.peak_bytes = me.peak_bytes.max(fast.held_bytes());
                return Ok(input_grad);
            }
            let (input, out) = me
                .alive
                .remove(&mb)
                .ok_or(format!("no forward of micro-batch {mb} to go back through"))?;
            match grad {
                Some(g) => (&out * &g).sum(out.kind()).backward(),
                None => out.backward(),
            }
            Ok(input.grad())
        })
    }

    /// The last stage's loss for `mb` from its `logits` (weighted `1/m`
    /// for the backward, so gradients add up to the batch's).
    fn loss_of(&mut self, mb: u32, logits: &Tensor, labels: &[i64]) -> f64 {
        self.computing(|me| {
            if let Some(fast) = me.fast.as_mut() {
                return fast.loss(mb, logits, labels);
            }
            let y = Tensor::from_slice(labels);
            let loss = logits.cross_entropy_for_logits(&y);
            let value = loss.double_value(&[]);
            let scaled = loss / f64::from(me.micro);
            if let Some(entry) = me.alive.get_mut(&mb) {
                entry.1 = scaled;
            }
            value
        })
    }

    /// A linked stage's input for `mb`: `x` (the first stage's) or the
    /// previous stage's output from its channel.
    fn linked_input(&mut self, mb: u32, x: Option<Act>) -> Result<Tensor, String> {
        match (x, self.links.fwd_in.as_mut()) {
            (Some(x), _) => x.tensor(),
            (None, Some(rx)) => links::recv(rx, mb),
            (None, None) => Err("no input and no channel from the previous stage".into()),
        }
    }
}

#[prism::actor]
impl PipeStage {
    fn new(spec: StageSpec) -> Self {
        // A stage that cannot be built is a bug in the trainer: say why.
        PipeStage::build(&spec).unwrap_or_else(|e| panic!("pipeline stage: {e}"))
    }

    /// Micro-batch `mb`'s forward through this (not last) stage. (An
    /// internal failure panics: the call fails with the reason.)
    fn forward(&mut self, mb: u32, x: Act) -> Act {
        self.run_forward(mb, &x)
            .and_then(|out| Act::of(&out))
            .unwrap_or_else(|e| panic!("forward of micro-batch {mb}: {e}"))
    }

    /// The last stage's forward: the micro-batch's mean loss (weighted
    /// `1/m` for the backward, so gradients add up to the batch's).
    fn forward_last(&mut self, mb: u32, x: Act, labels: Vec<i64>) -> f64 {
        let logits = self
            .run_forward(mb, &x)
            .unwrap_or_else(|e| panic!("forward of micro-batch {mb}: {e}"));
        self.loss_of(mb, &logits, &labels)
    }

    /// The shape of this stage's output for an input of `shape` (a forward
    /// of zeros, keeping nothing): how the trainer sizes the channels
    /// between a user model's stages.
    fn probe(&self, shape: Vec<i64>) -> Result<Vec<i64>, String> {
        let x = Tensor::f_zeros(shape.as_slice(), (tch::Kind::Float, tch::Device::Cpu))
            .map_err(|e| e.to_string())?;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tch::no_grad(|| self.net.forward(&x))
        }))
        .map_err(|_| format!("the stage's forward fails on an input of shape {shape:?}"))?;
        Ok(out.size())
    }

    /// Makes the channels this stage reads — activations from the previous
    /// stage (`fwd`), gradients from the next (`bwd`) — of `slots` tensors
    /// up to `slot_bytes` each, dropping any it had; where they are
    /// (`None` if not asked for, or not possible here).
    fn open_links(
        &mut self,
        fwd: bool,
        bwd: bool,
        slots: u32,
        slot_bytes: u64,
    ) -> (Option<ChannelSpec>, Option<ChannelSpec>) {
        self.links = Links::default();
        let open = |want: bool| {
            want.then(|| prism::channel::channel(slots.max(1), slot_bytes as usize))
                .and_then(|c| {
                    c.inspect_err(|e| {
                        tracing::warn!("no channel between stages, tensors go as results: {e}")
                    })
                    .ok()
                })
        };
        let (f, b) = (open(fwd), open(bwd));
        let spec = |c: Option<(ChannelSpec, _)>, to: &mut Option<_>| {
            c.map(|(spec, rx)| {
                *to = Some(rx);
                spec
            })
        };
        (
            spec(f, &mut self.links.fwd_in),
            spec(b, &mut self.links.bwd_in),
        )
    }

    /// Connects to the next stage's activation channel and the previous
    /// stage's gradient channel.
    fn connect_links(
        &mut self,
        fwd_out: Option<ChannelSpec>,
        bwd_out: Option<ChannelSpec>,
    ) -> Result<(), String> {
        let connect = |c: Option<ChannelSpec>| c.map(|c| c.connect()).transpose();
        self.links.fwd_out = connect(fwd_out).map_err(|e| e.to_string())?;
        self.links.bwd_out = connect(bwd_out).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Micro-batch `mb`'s forward through this (not last) linked stage:
    /// its input is `x` (the first stage) or comes from the previous
    /// stage's channel; its output goes into the next stage's.
    fn forward_linked(&mut self, mb: u32, x: Option<Act>) {
        self.linked_input(mb, x)
            .and_then(|x| self.forward_tensor(mb, x))
            .and_then(|out| match self.links.fwd_out.as_mut() {
                Some(tx) => links::send(tx, mb, &out),
                None => Err("no channel to the next stage".into()),
            })
            .unwrap_or_else(|e| panic!("forward of micro-batch {mb}: {e}"))
    }

    /// The last linked stage's forward: the micro-batch's mean loss.
    fn forward_last_linked(&mut self, mb: u32, x: Option<Act>, labels: Vec<i64>) -> f64 {
        let logits = self
            .linked_input(mb, x)
            .and_then(|x| self.forward_tensor(mb, x))
            .unwrap_or_else(|e| panic!("forward of micro-batch {mb}: {e}"));
        self.loss_of(mb, &logits, &labels)
    }

    /// Micro-batch `mb`'s backward through a linked stage: from its loss
    /// (the last stage) or the gradient the next stage sent; the gradient
    /// of its input goes to the previous stage (none for the first).
    fn backward_linked(&mut self, mb: u32) {
        let run = |me: &mut PipeStage| -> Result<(), String> {
            let grad = match me.links.bwd_in.as_mut() {
                Some(rx) => Some(links::recv(rx, mb)?),
                None => None,
            };
            let input_grad = me.backward_of(mb, grad)?;
            if let Some(tx) = me.links.bwd_out.as_mut() {
                links::send(tx, mb, &input_grad)?;
            }
            me.backward_done(mb)
        };
        run(self).unwrap_or_else(|e| panic!("backward of micro-batch {mb}: {e}"))
    }

    /// Micro-batch `mb`'s backward: `grad` is the gradient of its output;
    /// returns that of its input.
    fn backward(&mut self, mb: u32, grad: Act) -> Act {
        grad.tensor()
            .and_then(|g| self.backward_of(mb, Some(g)))
            .and_then(|g| Act::of(&g))
            .and_then(|g| self.backward_answered(mb).map(|()| g))
            .unwrap_or_else(|e| panic!("backward of micro-batch {mb}: {e}"))
    }

    /// The last stage's backward, from its loss.
    fn backward_last(&mut self, mb: u32) -> Act {
        self.backward_of(mb, None)
            .and_then(|g| Act::of(&g))
            .and_then(|g| self.backward_answered(mb).map(|()| g))
            .unwrap_or_else(|e| panic!("backward of micro-batch {mb}: {e}"))
    }

    /// The batch is done: one optimizer step on the accumulated gradients.
    /// Returns the most micro-batches alive at once during it, the most
    /// bytes of activations held, and the microseconds spent computing.
    fn step(&mut self) -> Result<(u64, u64, u64), String> {
        self.computing(|me| {
            // Weight gradients a backward left for the step (as a result).
            if let Some(fast) = me.fast.as_mut() {
                fast.flush(&me.vs)?;
            }
            me.opt.step(&me.vs).map_err(|e| e.to_string())?;
            me.opt.zero_grad(&me.vs);
            Ok::<(), String>(())
        })?;
        let busy = self.busy.as_micros() as u64;
        let peak = (self.peak as u64, self.peak_bytes, busy);
        self.peak = 0;
        self.peak_bytes = 0;
        self.busy = Duration::ZERO;
        self.alive.clear();
        if let Some(fast) = self.fast.as_mut() {
            fast.clear();
        }
        Ok(peak)
    }

    /// This stage's weights, in creation order (f32 bytes of `flat_weights`).
    fn weights(&self) -> Result<Vec<u8>, String> {
        recipes::flat_weights(&self.vs).map_err(|e| e.to_string())
    }

    /// Saves this stage's weights and optimizer as of `step`.
    fn save(&self, step: u64) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        crate::train::checkpoint::save(dir, step, 0, &self.vs, &self.opt).map_err(|e| e.to_string())
    }

    /// The steps this stage has checkpoints of.
    fn saved_steps(&self) -> Vec<u64> {
        self.dir
            .as_ref()
            .map(|d| {
                crate::train::checkpoint::list(d)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Loads this stage's checkpoint of `step`.
    fn restore(&mut self, step: u64) -> Result<(), String> {
        let dir = self.dir.as_ref().ok_or("no checkpoint directory")?;
        let path = crate::train::checkpoint::list(dir)
            .into_iter()
            .find(|(s, _)| *s == step)
            .map(|(_, p)| p)
            .ok_or(format!("no checkpoint of step {step} in {}", dir.display()))?;
        crate::train::checkpoint::load(&path, &mut self.vs, &mut self.opt)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Makes this stage's inbox for its replicas' ring (see
    /// [`RingMember::open_inbox`]).
    async fn open_inbox(&self) -> Option<ChannelSpec> {
        self.member.open_inbox()
    }

    /// Links to the same stage of the next replica (see
    /// [`RingMember::link`]).
    async fn set_next(
        &self,
        next: ActorHandle<PipeStage>,
        outbox: Option<ChannelSpec>,
        inbox_used: bool,
    ) -> Option<String> {
        let deliver = deliver_with(move |p| next.deliver(p).map(drop));
        self.member.link(deliver, outbox, inbox_used)
    }

    /// A piece of gradients from the previous replica.
    async fn deliver(&self, parcel: Parcel) {
        self.member.deliver(parcel);
    }

    /// Averages the accumulated gradients with the same stage of every
    /// other replica through their ring. The ring runs on a thread of its
    /// own, so this actor keeps taking the pieces the store path delivers.
    async fn average_grads(&self) -> Result<(), String> {
        // Shallow handles: the ring thread reduces the gradients where they
        // lie (large ones in place, the rest packed; as DDP does).
        let grads: Vec<Tensor> = self
            .vs
            .trainable_variables()
            .iter()
            .map(|v| v.grad())
            .filter(|g| g.defined())
            .collect();
        let mut ring = self.member.ring(
            self.replica as usize,
            self.replicas as usize,
            RING_BUCKET,
            RING_TIMEOUT,
        )?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("prism-pipe-ring-{}", self.replica))
            .spawn(move || {
                let refs: Vec<&Tensor> = grads.iter().collect();
                let r = crate::train::grads::host_all_reduce(&mut ring, &refs, true);
                let _ = tx.send((ring, r));
            })
            .map_err(|e| format!("cannot start the ring's thread: {e}"))?;
        let (ring, r) = rx.await.map_err(|_| "the ring's thread died".to_string())?;
        self.member.keep(ring);
        r.map_err(|e| e.to_string())
    }

    /// The node this stage runs on.
    fn node(&self) -> String {
        prism::node_id().map(|n| n.to_string()).unwrap_or_default()
    }
}
