"""Default hyperparameters: the DDPM paper's CIFAR-10 setup (Ho et al. 2020, Sec. 4, App. B).

Every other config starts from this one and changes what differs, so every key a run can
use is listed here (an override of a key not listed here is an error).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  # Any tensorflow-datasets name with an `image` feature, or "image_folder": every PNG, JPEG,
  # WebP, BMP or GIF under data.data_dir (recursively; labels from the first level of subfolders
  # when model.num_classes > 0), see ddpm/data/image_folder.py. A folder has one split, "train",
  # which tfds-style slices divide: split "train[:95%]", eval_split "train[95%:]".
  data.dataset = "cifar10"
  data.split = "train"
  data.eval_split = "test"
  # Empty: $TFDS_DATA_DIR, else tfds' default (~/tensorflow_datasets); image_folder: the folder.
  data.data_dir = ""
  data.image_size = 32
  data.channels = 3
  # "pad" (centre on black), "resize" (bilinear; image_folder: the shorter side to image_size,
  # then the centre crop) or "none" (images must have the size).
  data.resize_method = "none"
  data.random_flip = True
  data.shuffle_buffer_size = 50_000
  data.cache = True  # Cache decoded examples in memory (fine for MNIST/CIFAR sizes).
  # image_folder: an unreadable or truncated image "stop"s the run (naming it) before training,
  # or is "skip"ped (counted in the log).
  data.bad_images = "stop"

  config.model = model = ml_collections.ConfigDict()
  model.ch = 128
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 2
  model.attn_resolutions = (16,)
  model.dropout = 0.1
  model.num_groups = 32
  model.num_heads = 1
  # 0: unconditional. K > 0: class-conditional on the dataset's `label` (0..K-1), with a null
  # label K for classifier-free guidance (Ho & Salimans 2022); see training.label_dropout.
  model.num_classes = 0
  model.dtype = "float32"  # Compute dtype: "float32" or "bfloat16" (parameters stay float32).

  config.diffusion = diffusion = ml_collections.ConfigDict()
  diffusion.num_timesteps = 1000
  diffusion.beta_schedule = "linear"  # "linear", "cosine", "sigmoid" or "quadratic".
  diffusion.beta_start = 1e-4
  diffusion.beta_end = 0.02
  diffusion.scale_betas_to_1000 = False  # Scale linear betas by 1000 / T for short chains.
  diffusion.prediction_type = "eps"  # "eps", "x0" or "v".
  diffusion.loss_weighting = "none"  # "none" (L_simple) or "min_snr".
  diffusion.min_snr_gamma = 5.0
  # Where training draws t: "uniform", or "importance": t ~ p(t) proportional to the loss weight
  # w(t), each example weighted by w(t) / (T p(t)) (the same objective; ddpm/diffusion/losses.py).
  diffusion.timestep_sampling = "uniform"

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = "adam"  # "adam" or "adamw".
  optim.learning_rate = 2e-4
  optim.lr_schedule = "constant"  # After warm-up: "constant" or "cosine".
  optim.warmup_steps = 5000
  optim.beta1 = 0.9
  optim.beta2 = 0.999
  optim.eps = 1e-8
  optim.weight_decay = 0.0
  optim.grad_clip_norm = 1.0  # 0 disables clipping.
  optim.ema_decay = 0.9999
  optim.ema_warmup = False  # Decay min(ema_decay, (1 + step) / (10 + step)).

  config.training = training = ml_collections.ConfigDict()
  training.batch_size = 128  # Global batch, over all devices and hosts.
  training.num_train_steps = 800_000
  training.log_every_steps = 100
  training.sample_every_steps = 10_000  # 0 disables sample grids during training.
  training.num_sample_images = 64
  training.checkpoint_every_steps = 5_000
  training.keep_checkpoints = 3  # The newest K checkpoints are kept ...
  training.keep_every_steps = 0  # ... and, if > 0, every checkpoint at a multiple of this.
  # A step with a non-finite loss or gradient is never applied; then "stop" ends the run
  # with an error naming the step, "skip" counts it and goes on.
  training.nan_policy = "stop"
  # Fine-tuning (ddpm/training/finetune.py): start from the checkpoint of another run (its workdir, its
  # checkpoints/ directory or a step directory), taking its EMA ("ema") or raw ("params")
  # parameters, and train only the parameters whose path matches one of the comma-separated
  # regular expressions in `trainable` (empty: all), e.g. "^up_,^out_norm,^conv_out".
  training.init_from = ""
  training.init_params = "ema"
  training.trainable = ""
  # Class-conditional models: probability that a training label is replaced by the null
  # label, which trains the unconditional model that guidance needs (Ho & Salimans: 0.1-0.2).
  training.label_dropout = 0.1

  # Sampling for the grids written during training and for --mode=sample.
  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "ddpm"  # "ddpm" (ancestral), "ddim", "dpm_solver_pp_2m" or "heun" (ODE).
  sampling.num_steps = 1000  # Respaced steps; <= diffusion.num_timesteps.
  sampling.spacing = "uniform"  # "uniform", "trailing" or "quadratic".
  sampling.eta = 0.0  # DDIM only: 0 deterministic, 1 = DDPM with beta_tilde variance.
  sampling.variance = "beta_tilde"  # DDPM only: "beta_tilde" or "beta".
  sampling.clip_x0 = True
  sampling.num_samples = 64  # --mode=sample.
  sampling.batch_size = 64  # Images per sampler call, over all local devices.
  sampling.seed = 0
  sampling.use_ema = True
  sampling.checkpoint_step = -1  # -1: the latest checkpoint.
  # A .safetensors file written by --mode=export: every sampling, evaluation and editing mode
  # then reads its weights instead of the workdir's checkpoints, and its model and diffusion
  # settings replace this config's (the workdir only receives the outputs).
  sampling.pretrained = ""
  # Class-conditional models only: the class to draw (-1: balanced blocks, one row per class)
  # and the classifier-free guidance weight w of eps = (1 + w) eps(x, c) - w eps(x)
  # (Ho & Salimans 2022, eq. 6): 0 conditional, -1 unconditional, > 0 stronger guidance.
  sampling.class_label = -1
  sampling.guidance_weight = 0.0
  # Autoguidance (Karras et al. 2024): guide the model with a weaker checkpoint of the same run,
  # D = (1 + w) D_model - w D_guide (their weight 1 + w); 0 turns it off. guide_step names the
  # guide's checkpoint in the workdir (e.g. an early one); each sampler evaluation then costs two
  # network evaluations. Used by --mode=sample, eval, synthesize and the training grids (once the
  # guide's checkpoints exist), and --mode=export writes the guide into its file; the editing
  # and anomaly modes sample without it.
  sampling.autoguidance_weight = 0.0
  sampling.guide_step = -1
  # More checkpoints of the same run averaged with guide_step's into the guide: the guide is the
  # mean of their parameters (EMA or raw by guide_use_ema; the steps are a set, a step named
  # twice counts once), a smoother snapshot of early training than one checkpoint. Training
  # saves and keeps every checkpoint guide_step and guide_average_steps name.
  sampling.guide_average_steps = ()
  sampling.guide_use_ema = True
  # Guidance only at time steps guide_t_min <= t <= guide_t_max (-1: T - 1), as guidance in a
  # limited interval of noise levels (Kynkaanniemi et al. 2024); elsewhere the guide is skipped.
  sampling.guide_t_min = 0
  sampling.guide_t_max = -1

  # --mode=eval: sample quality, likelihood and denoising of a checkpoint (ddpm/jobs/evaluate.py).
  # Samples come from config.sampling (method, steps, seed, checkpoint_step, use_ema).
  config.eval = ev = ml_collections.ConfigDict()
  ev.metrics = "samples,bpd,denoise"  # Any of: samples (FID/IS/precision/recall), bpd, denoise.
  ev.num_samples = 1000  # Generated images for FID, IS and precision/recall.
  ev.samples_npz = ""  # Score these images (an .npz with `images`, or a folder of images) instead of drawing new ones.
  ev.reference_split = "train"  # Real images FID and precision/recall compare against.
  ev.num_reference = 0  # Reference images for the FID statistics; 0: the whole split.
  ev.real_split = "test"  # Real images scored like samples: the floor any model is measured by.
  ev.pr_k = 3  # k of the k-NN precision/recall (Kynkaanniemi et al. 2019).
  ev.is_splits = 10
  ev.inception_weights = ""  # FID Inception .npz for natural images (ddpm/models/inception.py).
  ev.bpd_num_images = 1000  # Test images for the variational bound (bits/dim).
  ev.bpd_num_strata = 50  # Time steps per image (stratified, unbiased); num_timesteps: exact.
  ev.bpd_variance = "beta_tilde"  # Reverse-process variance in the bound: beta_tilde or beta.
  ev.denoise_sigmas = (0.05, 0.1, 0.2, 0.4)  # Noise std on the [0, 1] pixel scale.
  ev.denoise_num_images = 200
  ev.denoise_ddim_steps = 20  # DDIM steps from t down to 0 (besides one-step and full DDPM).
  ev.batch_size = 250  # Images per jit call for the bound and denoising.
  ev.seed = 0

  # --mode=inpaint (RePaint), --mode=process (pictures of the process) and --mode=denoise:
  # ddpm/jobs/inpaint.py, process.py, denoise.py.
  # The checkpoint is chosen by config.sampling (checkpoint_step, use_ema); the process
  # figures' reverse trajectory uses config.sampling's sampler.
  config.edit = edit = ml_collections.ConfigDict()
  # An .npz with `images` or a folder of images (read as data.dataset="image_folder" reads one);
  # empty: data.eval_split images.
  edit.input = ""
  edit.num_images = 8
  edit.mask = "center_box"  # A built-in (ddpm.diffusion.inpainting.MASKS) or a PNG (nonzero = known).
  edit.jump_length = 10  # RePaint's j (Lugmayr et al. 2022, Sec. 4.2).
  edit.jump_n_sample = 10  # RePaint's r; 1: no resampling.
  edit.num_steps = 250  # Respaced RePaint steps; <= diffusion.num_timesteps.
  edit.num_frames = 10  # Columns of the process strips and frames of the GIFs.
  # --mode=denoise: images that carry Gaussian noise of std noise_sigma ([0, 1] pixel scale),
  # added here first if add_noise (clean inputs; the figure then shows the originals), are
  # denoised by config.sampling's sampler from t0 with min(sampling.num_steps, t0 + 1) steps
  # (trailing spacing over 0..t0). strength
  # 0: t0 is the step whose noise level matches noise_sigma; > 0: SDEdit (Meng et al. 2022)
  # from t0 = strength * T, adding the missing noise.
  edit.noise_sigma = 0.2
  edit.add_noise = True
  edit.strength = 0.0
  edit.seed = 0

  # --mode=synthesize (class-conditional models, ddpm/jobs/synthesize.py): num_per_class images of
  # every class drawn with config.sampling, written as <name>.npz and a TFDS dataset that
  # --config.data.dataset=<name> --config.data.data_dir=<out_dir>/tfds trains on.
  config.synthesize = synthesize = ml_collections.ConfigDict()
  synthesize.num_per_class = 100
  synthesize.name = ""  # Empty: <data.dataset>_synthetic.
  synthesize.out_dir = ""  # Empty: <workdir>/synthetic.

  # --mode=anomaly (ddpm/jobs/anomaly.py): scores data.dataset's normal_split (normal) and
  # `anomalous` (a TFDS name or an .npz with `images`) by the model's denoising error at
  # `timesteps` (num_draws noise draws each) and/or the bound in bits/dim; AUROC.
  # --mode=export (ddpm/jobs/export.py): the checkpoint chosen by config.sampling (checkpoint_step,
  # use_ema) as one self-describing .safetensors file (parameters + model, diffusion and data
  # settings in its metadata) and a .json of the same settings beside it; ddpm.load_pretrained
  # reads it without the workdir or the config file.
  config.export = export = ml_collections.ConfigDict()
  export.path = ""  # Empty: <workdir>/export/model_step<S>_<ema|params>.safetensors.

  config.anomaly = anomaly = ml_collections.ConfigDict()
  anomaly.anomalous = "fashion_mnist"
  anomaly.anomalous_split = "test"
  anomaly.normal_split = "test"
  anomaly.num_images = 1000  # Of each kind.
  anomaly.scores = "denoise,bpd"
  anomaly.timesteps = (10, 50, 100, 200, 300, 500, 700)
  anomaly.num_draws = 2
  anomaly.bpd_num_strata = 50
  anomaly.batch_size = 250
  anomaly.seed = 0
  return config
