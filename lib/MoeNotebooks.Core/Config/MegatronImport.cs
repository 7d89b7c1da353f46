using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace MoeNotebooks.Config;

/// <summary>What <see cref="MegatronImport.Parse"/> read from a launch command.</summary>
/// <param name="Model">Scenario "model" object (the keys <see cref="ModelSpec.Read"/> accepts).</param>
/// <param name="Strategy">The layout and execution, with fields named as Megatron's flags.</param>
/// <param name="Gpus">World size: torchrun's --nproc_per_node x --nnodes, or the caller's override.</param>
/// <param name="Used">Flags read into the scenario, with their values.</param>
/// <param name="NotModelled">Flags Megatron knows that this tool reads but cannot express yet, each with why.</param>
/// <param name="NoEffect">Flags that do not change the time of a step (paths, learning rate, logging, ...).</param>
/// <param name="Unknown">Flags this importer does not know: listed, never dropped silently.</param>
public sealed record MegatronImportResult(
    JsonObject Model,
    StrategySpec Strategy,
    int Gpus,
    IReadOnlyList<(string Flag, string? Value)> Used,
    IReadOnlyList<(string Flag, string Reason)> NotModelled,
    IReadOnlyList<string> NoEffect,
    IReadOnlyList<string> Unknown)
{
    /// <summary>The scenario JSON: model, hardware preset resized to the world size, strategy.</summary>
    public JsonObject Scenario(string name, string hardwarePreset) => new JsonObject
    {
        ["name"] = name,
        ["description"] = "Imported by moe import-megatron from a Megatron-LM launch command.",
        ["model"] = Model.DeepClone(),
        ["hardware"] = new JsonObject { ["preset"] = hardwarePreset, ["gpus"] = Gpus },
        ["strategy"] = Strategy.ToJson(),
    }.Also(o =>
    {
        // --moe-enable-deepep: the all-to-all runs DeepEP's normal (training) kernels, priced by the cost model.
        if (Strategy.MoeAllToAllOverlap == MoeAllToAllOverlap.DeepEp)
            o["costModel"] = new JsonObject { ["kind"] = "roofline-ideal", ["alltoall"] = "deep-ep-normal" };
    });

    /// <summary>The parallel and batch flags of <see cref="Strategy"/> back as a Megatron-LM argument list (the inverse of the import).</summary>
    public static string ToMegatronFlags(StrategySpec st, JsonObject model, int gpus)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        void Flag(string name, object? value = null) => sb.Append(c, $" --{name}").Append(value is null ? "" : string.Create(c, $" {value}"));
        var layers = (int)model["layers"]!;
        sb.Append(c, $"torchrun --nproc_per_node {gpus} --nnodes 1 pretrain_gpt.py");
        Flag("num-layers", layers);
        Flag("hidden-size", (long)model["hiddenSize"]!);
        Flag("num-attention-heads", (int)model["attentionHeads"]!);
        if ((int?)model["kvHeads"] is { } kv) { Flag("group-query-attention"); Flag("num-query-groups", kv); }
        if ((long?)model["headDim"] is { } kc) Flag("kv-channels", kc);
        if ((string?)model["ffnActivation"] == "swiglu") Flag("swiglu");
        if ((bool?)model["tieEmbeddings"] == false) Flag("untie-embeddings-and-output-weights");
        if ((int?)model["experts"] is > 0 and var experts)
        {
            Flag("num-experts", experts);
            Flag("moe-router-topk", (int)model["topK"]!);
            if ((long?)model["moeFfnHiddenSize"] is { } mf)
            {
                Flag("ffn-hidden-size", (long)model["ffnHiddenSize"]!);
                Flag("moe-ffn-hidden-size", mf);
            }
            else Flag("moe-ffn-hidden-size", (long)model["ffnHiddenSize"]!);
            if ((long?)model["sharedExpertFfnHiddenSize"] is { } se) Flag("moe-shared-expert-intermediate-size", se);
            if ((int?)model["denseLayers"] is > 0 and var dl) Flag("moe-layer-freq", string.Create(c, $"([0]*{dl}+[1]*{layers - dl})"));
        }
        else Flag("ffn-hidden-size", (long)model["ffnHiddenSize"]!);
        if (model["mla"] is JsonObject mla)
        {
            Flag("multi-latent-attention");
            if ((long)mla["qLoraRank"]! > 0) Flag("q-lora-rank", (long)mla["qLoraRank"]!);
            Flag("kv-lora-rank", (long)mla["kvLoraRank"]!);
            Flag("qk-head-dim", (long)mla["qkNopeHeadDim"]!);
            Flag("qk-pos-emb-head-dim", (long)mla["qkRopeHeadDim"]!);
            Flag("v-head-dim", (long)mla["vHeadDim"]!);
        }
        if ((int?)model["mtpLayers"] is > 0 and var mtp) Flag("mtp-num-layers", mtp);
        switch ((string?)model["precision"])
        {
            case "fp8-delayed": Flag("fp8-format", "hybrid"); Flag("fp8-recipe", "delayed"); break;
            case "fp8-current": Flag("fp8-format", "hybrid"); Flag("fp8-recipe", "tensorwise"); break;
            case "mxfp8": Flag("fp8-format", "e4m3"); Flag("fp8-recipe", "mxfp8"); break;
            case "nvfp4": Flag("fp4-format", "e2m1"); Flag("fp4-recipe", "nvfp4"); break;
        }
        Flag("seq-length", (long)model["sequenceLength"]!);
        if ((long?)model["vocabulary"] is > 0 and var v) Flag("vocab-size", v);
        var dtype = (string?)model["dtype"];
        if (dtype is "bf16" or "fp16") Flag(dtype);
        var mbs = (long)model["batch"]! / ((long)st.AttentionDataParallelSize * st.Microbatches);
        Flag("micro-batch-size", mbs);
        Flag("global-batch-size", (long)model["batch"]!);
        Flag("tensor-model-parallel-size", st.TP);
        Flag("pipeline-model-parallel-size", st.PP);
        if (st.VirtualStages > 1) Flag("num-layers-per-virtual-pipeline-stage", layers / (st.PP * st.VirtualStages));
        if (st.CP > 1) Flag("context-parallel-size", st.CP);
        if (st.EP > 1) Flag("expert-model-parallel-size", st.EP);
        if (st.ExpertTensorParallelSize is { } etp) Flag("expert-tensor-parallel-size", etp);
        if (st.SequenceParallel) Flag("sequence-parallel");
        if (st.UseDistributedOptimizer) Flag("use-distributed-optimizer");
        if (st.OverlapGradReduce) Flag("overlap-grad-reduce");
        if (st.OverlapParamGather) Flag("overlap-param-gather");
        if (st.Recompute) { Flag("recompute-granularity", "full"); Flag("recompute-method", "uniform"); Flag("recompute-num-layers", 1); }
        if (st.RecomputeModules != RecomputeModules.None) { Flag("recompute-granularity", "selective"); Flag("recompute-modules", st.RecomputeModules.ToText()); }
        if (st.DecoderFirstPipelineNumLayers is { } f) Flag("decoder-first-pipeline-num-layers", f);
        if (st.DecoderLastPipelineNumLayers is { } l) Flag("decoder-last-pipeline-num-layers", l);
        if (st.MoeAllToAllOverlap == MoeAllToAllOverlap.DeepEp) { Flag("moe-token-dispatcher-type", "flex"); Flag("moe-enable-deepep"); }
        if (st.MoeAllToAllOverlap == MoeAllToAllOverlap.OneFOneB) Flag("overlap-moe-expert-parallel-comm");
        return sb.ToString();
    }
}

/// <summary>
/// Reads a Megatron-LM / Megatron-Bridge launch command (torchrun ... pretrain_gpt.py --flag value ...) into a
/// scenario. Flag names and defaults follow megatron/training/arguments.py: --ffn-hidden-size defaults to
/// 4 x hidden, the data-parallel size is world / (TP x PP x CP), the expert-data-parallel size world / (ETP x EP x PP),
/// microbatches per step = global batch / (micro batch x data-parallel size), --overlap-grad-reduce is off unless
/// given. Shell variables ($X) cannot be resolved and are reported.
/// </summary>
public static class MegatronImport
{
    private static readonly HashSet<string> Switches = new(StringComparer.Ordinal)
    {
        "sequence-parallel", "use-distributed-optimizer", "overlap-grad-reduce", "overlap-param-gather", "bf16", "fp16",
        "moe-enable-deepep", "overlap-moe-expert-parallel-comm", "use-flash-attn", "use-mcore-models", "disable-bias-linear",
        "swiglu", "untie-embeddings-and-output-weights", "group-query-attention", "no-masked-softmax-fusion",
        "no-position-embedding", "moe-grouped-gemm", "mock-data", "no-load-optim", "no-load-rng", "use-rotary-position-embeddings",
        "fp8-param-gather", "moe-permute-fusion", "no-gradient-accumulation-fusion", "use-legacy-models", "apply-layernorm-1p",
        "no-bias-swiglu-fusion", "no-bias-dropout-fusion", "moe-router-pre-softmax", "qk-layernorm", "manual-gc",
        "tp-comm-overlap", "defer-embedding-wgrad-compute", "no-save-optim", "no-save-rng",
        "log-throughput", "use-cpu-initialization", "moe-use-legacy-grouped-gemm", "calculate-per-token-loss",
        "multi-latent-attention",
    };

    /// <summary>Flags known not to change a step's time: data, paths, optimiser hyper-parameters, logging, checkpoints.</summary>
    private static readonly string[] NoEffectPrefixes =
    [
        "lr", "lr-", "min-lr", "save-", "weight-decay", "adam-", "clip-grad", "init-method-std", "train-iters", "train-samples", "save", "load",
        "data-path", "split", "vocab-file", "merge-file", "tokenizer-", "log-", "eval-", "tensorboard-", "wandb-", "no-position-embedding", "seed",
        "rampup-batch-size", "mock-data", "no-load-", "no-save-", "distributed-backend", "exit-", "ckpt-", "use-mcore-models",
        "use-legacy-models", "use-cpu-initialization", "manual-gc", "distributed-timeout-minutes", "calculate-per-token-loss",
        "max-position-embeddings", "moe-aux-loss-coeff", "moe-router-load-balancing-type", "moe-z-loss-coeff", "rotary-base",
        "attention-dropout", "hidden-dropout", "override-opt_param-scheduler", "timing-log-level", "no-gradient-accumulation-fusion",
        "moe-token-dispatcher-type", "moe-permute-fusion", "moe-use-legacy-grouped-gemm",
    ];

    /// <summary>Flags Megatron has that change the step but this tool cannot say yet, with why.</summary>
    private static readonly Dictionary<string, string> NotModelledReasons = new(StringComparer.Ordinal)
    {
        ["moe-layer-freq"] = "only the first-k-dense pattern ([0]*k+[1]*n, or 1) is in the model description; other MoE layer patterns are priced as every layer MoE",
        ["recompute-granularity"] = "must be full or selective",
        ["moe-expert-capacity-factor"] = "read as dropless: set model.routing.capacityFactor by hand",
        ["tp-comm-overlap"] = "TP communication overlap with GEMMs is not modelled",
        ["normalization"] = "RMSNorm and LayerNorm are priced alike (memory-bound elementwise)",
        ["position-embedding-type"] = "position embeddings are not priced",
        ["disable-bias-linear"] = "biases are not priced",
        ["qk-layernorm"] = "the per-head query/key norms (Qwen3, DeepSeek MLA) are not priced (memory-bound passes over Q and K)",
        ["moe-grouped-gemm"] = "experts are priced as one GEMM per expert with its real tokens (a grouped GEMM is not a separate kernel model yet)",
        ["no-masked-softmax-fusion"] = "the unfused softmax is priced only with strategy.attentionKernel = materialized (set it by hand)",
        ["use-flash-attn"] = "attention is priced as a fused (flash) kernel by default",
        ["attention-backend"] = "attention is priced as a fused (flash) kernel by default",
        ["num-layers-per-virtual-pipeline-stage"] = "",
    };

    public static MegatronImportResult Parse(string commandLine, int? gpusOverride = null)
    {
        var tokens = Tokenize(commandLine);
        var flags = new List<(string Name, string? Value)>();
        for (var i = 0; i < tokens.Count; i++)
        {
            var t = tokens[i];
            if (!t.StartsWith("--", StringComparison.Ordinal)) continue;
            var name = t[2..];
            string? value = null;
            var eq = name.IndexOf('=', StringComparison.Ordinal);
            if (eq >= 0) { value = name[(eq + 1)..]; name = name[..eq]; }
            else if (!Switches.Contains(name) && i + 1 < tokens.Count && !tokens[i + 1].StartsWith("--", StringComparison.Ordinal))
            {
                value = tokens[++i];
                // --recompute-modules takes a list of module names (nargs '*').
                while (name == "recompute-modules" && i + 1 < tokens.Count && !tokens[i + 1].StartsWith("--", StringComparison.Ordinal))
                    value += " " + tokens[++i];
                // Multi-valued flags (--split a,b,c is one token; --rampup-batch-size 16 16 5859375 is three).
                while (i + 1 < tokens.Count && !tokens[i + 1].StartsWith("--", StringComparison.Ordinal) && LooksNumeric(tokens[i + 1]) && LooksNumeric(value))
                    value += " " + tokens[++i];
            }
            flags.Add((name.Replace('_', '-'), value));
        }
        var byName = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var (n, v) in flags) byName[n] = v;
        var used = new List<(string, string?)>();
        var notModelled = new List<(string, string)>();
        var noEffect = new List<string>();
        var unknown = new List<string>();

        string? Raw(string flag)
        {
            if (!byName.TryGetValue(flag, out var v)) return null;
            used.Add(("--" + flag, v));
            if (v is null) throw new ConfigException("--" + flag, null, "needs a value");
            if (v.StartsWith('$')) throw new ConfigException("--" + flag, v, "is a shell variable this importer cannot resolve; substitute its value (or pass --gpus for torchrun's sizes)");
            return v;
        }
        long? Long(string flag)
        {
            var v = Raw(flag);
            if (v is null) return null;
            if (!long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var x) || x <= 0)
                throw new ConfigException("--" + flag, v, "must be a positive integer");
            return x;
        }
        int? Int(string flag) => Long(flag) is { } x ? checked((int)x) : null;
        bool Switch(string flag)
        {
            if (!byName.ContainsKey(flag)) return false;
            used.Add(("--" + flag, null));
            return true;
        }
        long Required(string flag) => Long(flag) ?? throw new ConfigException("--" + flag, null, "is required to describe the model");

        var layers = checked((int)Required("num-layers"));
        var hidden = Required("hidden-size");
        var heads = checked((int)Required("num-attention-heads"));
        var seq = Long("seq-length") ?? Long("encoder-seq-length") ?? throw new ConfigException("--seq-length", null, "is required to describe the model");
        var experts = Int("num-experts") ?? 0;
        var topK = Int("moe-router-topk") ?? (experts > 0 ? 2 : 1);
        var ffn = Long("ffn-hidden-size");
        var moeFfn = Long("moe-ffn-hidden-size");
        // --moe-layer-freq: 1 (every layer MoE), or a Python list expression; the first-k-dense pattern maps to denseLayers.
        var denseLayers = experts > 0 && byName.ContainsKey("moe-layer-freq") ? DenseLayersOf(Raw("moe-layer-freq")!, layers, notModelled) : 0;
        // Every layer MoE: the dense width is unused and experts take --moe-ffn-hidden-size (Megatron's default: the
        // dense width); with dense first layers both widths are kept.
        var ffnSize = experts > 0 && denseLayers == 0 ? moeFfn ?? ffn ?? 4 * hidden : ffn ?? 4 * hidden;
        if (experts > 0 && denseLayers == 0 && moeFfn is not null && ffn is not null && ffn != moeFfn) noEffect.Add("--ffn-hidden-size");
        var mbs = Long("micro-batch-size") ?? 1;
        var gbs = Required("global-batch-size");
        var vocab = Long("vocab-size");
        var dtype = Switch("bf16") ? "bf16" : Switch("fp16") ? "fp16" : "fp32";
        // Attention shape: --group-query-attention with --num-query-groups (Megatron's default 1 group), --kv-channels.
        int? kvHeads = null;
        if (Switch("group-query-attention")) kvHeads = Int("num-query-groups") ?? 1;
        else if (Int("num-query-groups") is not null)
            notModelled.Add(("--num-query-groups", "has no effect without --group-query-attention (Megatron then uses one group per head); read as full heads"));
        var kvChannels = Long("kv-channels");
        var swiglu = Switch("swiglu");
        var untie = Switch("untie-embeddings-and-output-weights");
        var sharedExpertSize = Long("moe-shared-expert-intermediate-size");
        var mtp = Int("mtp-num-layers");
        JsonObject? mla = null;
        if (Switch("multi-latent-attention"))
        {
            long Mla(string flag) => Long(flag) ?? throw new ConfigException("--" + flag, null, "is required with --multi-latent-attention (this importer does not assume a default)");
            mla = new JsonObject
            {
                ["qLoraRank"] = Long("q-lora-rank") ?? 0,   // Megatron's None: queries without low-rank compression
                ["kvLoraRank"] = Mla("kv-lora-rank"),
                ["qkNopeHeadDim"] = Mla("qk-head-dim"),
                ["qkRopeHeadDim"] = Mla("qk-pos-emb-head-dim"),
                ["vHeadDim"] = Mla("v-head-dim"),
            };
        }
        // FP8 (Megatron: --fp8-format e4m3|hybrid turns it on, --fp8-recipe delayed (default)|tensorwise|mxfp8|blockwise)
        // and FP4 (--fp4-format e2m1, --fp4-recipe nvfp4) map to this tool's precision recipes (Transformer Engine's
        // DelayedScaling, Float8CurrentScaling, MXFP8BlockScaling, NVFP4BlockScaling).
        string? precision = null;
        if (byName.ContainsKey("fp8-format"))
        {
            Raw("fp8-format");
            var recipe = byName.ContainsKey("fp8-recipe") ? Raw("fp8-recipe") : "delayed";
            precision = recipe switch { "delayed" => "fp8-delayed", "tensorwise" => "fp8-current", "mxfp8" => "mxfp8", _ => null };
            if (precision is null) notModelled.Add(("--fp8-recipe", $"{recipe}: no matching precision recipe (known: delayed, tensorwise, mxfp8); priced in {dtype}"));
        }
        else if (byName.ContainsKey("fp4-format"))
        {
            Raw("fp4-format");
            var recipe = byName.ContainsKey("fp4-recipe") ? Raw("fp4-recipe") : "nvfp4";
            precision = recipe == "nvfp4" ? "nvfp4" : null;
            if (precision is null) notModelled.Add(("--fp4-recipe", $"{recipe}: no matching precision recipe (known: nvfp4); priced in {dtype}"));
        }
        else if (byName.ContainsKey("fp8-recipe")) notModelled.Add(("--fp8-recipe", "has no effect without --fp8-format (Megatron trains in the base dtype)"));

        var tp = Int("tensor-model-parallel-size") ?? 1;
        var pp = Int("pipeline-model-parallel-size") ?? 1;
        var cp = Int("context-parallel-size") ?? 1;
        var ep = Int("expert-model-parallel-size") ?? 1;
        int? etp = Int("expert-tensor-parallel-size");
        var vp = 1;
        if (Int("num-layers-per-virtual-pipeline-stage") is { } perVirtual)
        {
            if (layers % (pp * perVirtual) != 0)
                throw new ConfigException("--num-layers-per-virtual-pipeline-stage", perVirtual.ToString(CultureInfo.InvariantCulture), $"must divide --num-layers / --pipeline-model-parallel-size = {layers} / {pp}");
            vp = layers / (pp * perVirtual);
        }
        if (Int("virtual-pipeline-model-parallel-size") is { } vpp) vp = vpp;

        int gpus;
        if (gpusOverride is { } g) gpus = g;
        else
        {
            var perNode = Int("nproc-per-node") ?? throw new ConfigException("--gpus", null, "cannot be read from the command (no torchrun --nproc_per_node): pass --gpus N");
            gpus = perNode * (Int("nnodes") ?? 1);
        }
        foreach (var torchrun in new[] { "node-rank", "master-addr", "master-port", "rdzv-endpoint", "rdzv-backend", "rdzv-id" })
            if (byName.ContainsKey(torchrun)) noEffect.Add("--" + torchrun);

        // Megatron pads the vocabulary to a multiple of --make-vocab-size-divisible-by (128) x TP (_vocab_size_with_padding);
        // the logits GEMM and the embedding run on the padded size.
        if (vocab is { } unpadded)
        {
            var multiple = (Long("make-vocab-size-divisible-by") ?? 128) * tp;
            vocab = (unpadded + multiple - 1) / multiple * multiple;
        }
        var etpValue = etp ?? tp;
        if (gpus % ((long)pp * ep * etpValue) != 0)
            throw new ConfigException("--expert-model-parallel-size", ep.ToString(CultureInfo.InvariantCulture), $"x expert-tensor-parallel {etpValue} x pipeline {pp} must divide the world size {gpus}");
        if (gpus % ((long)tp * pp * cp) != 0)
            throw new ConfigException("--tensor-model-parallel-size", tp.ToString(CultureInfo.InvariantCulture), $"x pipeline {pp} x context {cp} must divide the world size {gpus}");
        var dataParallel = gpus / (tp * pp * cp);
        var edp = gpus / (pp * ep * etpValue);
        if (gbs % (mbs * dataParallel) != 0)
            throw new ConfigException("--global-batch-size", gbs.ToString(CultureInfo.InvariantCulture), $"must be a multiple of micro-batch-size x data-parallel size = {mbs} x {dataParallel}");
        var microbatches = checked((int)(gbs / (mbs * dataParallel)));

        var recompute = false;
        var recomputeModules = RecomputeModules.None;
        if (byName.TryGetValue("recompute-granularity", out var granularity))
        {
            used.Add(("--recompute-granularity", granularity));
            if (granularity == "full") recompute = true;
            else if (granularity == "selective")
            {
                // Megatron's default list is ["core_attn"] (TransformerConfig.recompute_modules).
                var names = byName.TryGetValue("recompute-modules", out var list) ? (list ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries) : ["core_attn"];
                if (list is not null) used.Add(("--recompute-modules", list));
                recomputeModules = RecomputeModulesText.Parse("--recompute-modules", names);
            }
            else notModelled.Add(("--recompute-granularity", $"{granularity}: {NotModelledReasons["recompute-granularity"]}"));
            foreach (var f in new[] { "recompute-method", "recompute-num-layers" })
                if (byName.TryGetValue(f, out var v))
                {
                    used.Add(("--" + f, v));
                    if (f == "recompute-num-layers" && v != "1" && byName.GetValueOrDefault("recompute-method") == "block")
                        notModelled.Add(("--" + f, $"{v} with --recompute-method block: recomputation of some layers only is not modelled (all layers recomputed)"));
                }
        }
        // Context parallelism: Megatron-Core's default --cp-comm-type p2p is TE's ring attention, which the DAG prices.
        if (byName.TryGetValue("cp-comm-type", out var cpComm))
        {
            used.Add(("--cp-comm-type", cpComm));
            if (cpComm != "p2p") notModelled.Add(("--cp-comm-type", $"{cpComm}: only the ring (p2p) is priced; priced as p2p"));
        }
        var a2a = Switch("moe-enable-deepep") ? MoeAllToAllOverlap.DeepEp : Switch("overlap-moe-expert-parallel-comm") ? MoeAllToAllOverlap.OneFOneB : MoeAllToAllOverlap.None;
        var strategy = new StrategySpec(ep, tp, pp, edp, Derivation.Corrected, microbatches)
        {
            Mode = WorkloadMode.Training,
            Schedule = vp > 1 ? PipelineSchedule.Interleaved : PipelineSchedule.OneFOneB,
            VirtualStages = vp,
            Recompute = recompute,
            RecomputeModules = recomputeModules,
            ExpertTensorParallelSize = etp,
            ContextParallelSize = cp,
            SequenceParallel = Switch("sequence-parallel"),
            UseDistributedOptimizer = Switch("use-distributed-optimizer"),
            OverlapGradReduce = Switch("overlap-grad-reduce"),
            OverlapParamGather = Switch("overlap-param-gather"),
            DecoderFirstPipelineNumLayers = Int("decoder-first-pipeline-num-layers"),
            DecoderLastPipelineNumLayers = Int("decoder-last-pipeline-num-layers"),
            MoeAllToAllOverlap = a2a,
        };
        if (strategy.OverlapParamGather && !strategy.UseDistributedOptimizer)
        {
            notModelled.Add(("--overlap-param-gather", "has no effect without --use-distributed-optimizer; dropped"));
            strategy = strategy with { OverlapParamGather = false };
        }
        strategy.Validated("strategy");
        var model = new JsonObject
        {
            ["name"] = "imported",
            ["layers"] = layers,
            ["hiddenSize"] = hidden,
            ["attentionHeads"] = heads,
            ["ffnHiddenSize"] = ffnSize,
            ["experts"] = experts,
            ["topK"] = topK,
            ["batch"] = gbs,
            ["sequenceLength"] = seq,
            ["dtype"] = dtype,
        };
        if (experts > 0 && denseLayers > 0 && moeFfn is { } mf) model["moeFfnHiddenSize"] = mf;
        if (kvHeads is { } kv) model["kvHeads"] = kv;
        if (kvChannels is { } kc) model["headDim"] = kc;
        if (swiglu) model["ffnActivation"] = "swiglu";
        if (untie) model["tieEmbeddings"] = false;
        if (experts > 0 && sharedExpertSize is { } se) { model["sharedExperts"] = 1; model["sharedExpertFfnHiddenSize"] = se; }
        if (denseLayers > 0) model["denseLayers"] = denseLayers;
        if (mla is not null) model["mla"] = mla;
        if (mtp is { } mt) model["mtpLayers"] = mt;
        if (precision is not null) model["precision"] = precision;
        if (vocab is { } vv) model["vocabulary"] = vv;
        else notModelled.Add(("(vocabulary)", "no --vocab-size: the tokenizer's vocabulary is not read, so the embedding and output layer are left out (set model.vocabulary)"));

        var usedNames = used.Select(u => u.Item1[2..]).ToHashSet(StringComparer.Ordinal);
        foreach (var (name, value) in flags)
        {
            if (usedNames.Contains(name) || name is "nproc-per-node" or "nnodes" or "node-rank" or "master-addr" or "master-port" or "rdzv-endpoint" or "rdzv-backend" or "rdzv-id") continue;
            if (NotModelledReasons.TryGetValue(name, out var reason) && reason != "")
            {
                if (!notModelled.Any(n => n.Item1 == "--" + name)) notModelled.Add(("--" + name, reason));
            }
            else if (NoEffectPrefixes.Any(p => p.EndsWith('-') ? name.StartsWith(p, StringComparison.Ordinal) : name == p)) noEffect.Add("--" + name);
            else unknown.Add("--" + name + (value is null ? "" : " " + value));
        }
        return new MegatronImportResult(model, strategy, gpus, used, notModelled, noEffect.Distinct().ToArray(), unknown);
    }

    /// <summary>
    /// Dense first layers of a --moe-layer-freq value: "1" (every layer MoE) is 0; a Python list expression such as
    /// "([0]*3+[1]*58)" or "[0,0,1,1]" that is k zeros then ones gives k; any other pattern (e.g. an integer N > 1, every
    /// N-th layer MoE) is listed as not modelled and read as every layer MoE.
    /// </summary>
    internal static int DenseLayersOf(string value, int layers, List<(string, string)> notModelled)
    {
        var text = value.Replace(" ", "", StringComparison.Ordinal).Trim('(', ')', '"', '\'');
        if (text == "1") return 0;
        var pattern = new List<int>();
        foreach (var term in text.Split('+'))
        {
            var star = term.LastIndexOf('*');
            var times = 1;
            var list = term;
            if (star >= 0 && term[..star].EndsWith(']'))
            {
                if (!int.TryParse(term[(star + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out times)) { pattern = null; break; }
                list = term[..star];
            }
            if (!list.StartsWith('[') || !list.EndsWith(']')) { pattern = null; break; }
            var items = list[1..^1].Split(',', StringSplitOptions.RemoveEmptyEntries);
            if (items.Any(i => i is not ("0" or "1"))) { pattern = null; break; }
            for (var t = 0; t < times && pattern.Count <= layers; t++) pattern.AddRange(items.Select(i => i == "1" ? 1 : 0));
        }
        var dense = pattern?.TakeWhile(x => x == 0).Count() ?? 0;
        if (pattern is null || pattern.Count != layers || pattern.Skip(dense).Any(x => x == 0) || dense >= layers)
        {
            notModelled.Add(("--moe-layer-freq", $"{value}: {NotModelledReasons["moe-layer-freq"]}"));
            return 0;
        }
        return dense;
    }

    private static bool LooksNumeric(string s) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out _);

    /// <summary>Shell-like words: quotes, backslash-newline continuations and comments handled; variables left as written.</summary>
    internal static List<string> Tokenize(string text)
    {
        var words = new List<string>();
        var sb = new StringBuilder();
        var inWord = false;
        char quote = '\0';
        for (var i = 0; i < text.Length; i++)
        {
            var ch = text[i];
            if (quote != '\0')
            {
                if (ch == quote) quote = '\0';
                else sb.Append(ch);
                continue;
            }
            if (ch == '\\' && i + 1 < text.Length && (text[i + 1] == '\n' || text[i + 1] == '\r'))
            {
                while (i + 1 < text.Length && text[i + 1] is '\n' or '\r') i++;
                if (inWord) { words.Add(sb.ToString()); sb.Clear(); inWord = false; }
                continue;
            }
            if (ch == '#' && !inWord)
            {
                while (i + 1 < text.Length && text[i + 1] != '\n') i++;
                continue;
            }
            if (char.IsWhiteSpace(ch))
            {
                if (inWord) { words.Add(sb.ToString()); sb.Clear(); inWord = false; }
                continue;
            }
            inWord = true;
            if (ch is '"' or '\'') quote = ch;
            else sb.Append(ch);
        }
        if (inWord) words.Add(sb.ToString());
        return words;
    }
}

internal static class JsonObjectExtensions
{
    public static JsonObject Also(this JsonObject o, Action<JsonObject> action)
    {
        action(o);
        return o;
    }
}
