using System.Text.Json;
using System.Text.Json.Nodes;
using MoeNotebooks.Config;

namespace MoeNotebooks.Tests;

/// <summary>
/// <c>moe import-megatron</c> (issue 12): three launch commands written from NVIDIA/Megatron-LM's examples
/// (examples/gpt3/train_gpt3_175b_distributed.sh, examples/mixtral/train_mixtral_8x7b_distributed.sh, and an MoE launch
/// with the folding flags of the Megatron-Core MoE README), variables substituted as the scripts set them.
/// </summary>
public class MegatronImportTests
{
    /// <summary>examples/gpt3/train_gpt3_175b_distributed.sh on 16 nodes of 8 GPUs, --vocab-size added (the script reads a GPT-2 vocabulary file).</summary>
    internal const string Gpt3 = """
        torchrun --nproc_per_node 8 --nnodes 16 --master_addr localhost --master_port 6000 examples/classes/pretrain_gpt.py \
            --num-layers 96 --hidden-size 12288 --num-attention-heads 96 --seq-length 2048 --max-position-embeddings 2048 \
            --attention-backend auto --micro-batch-size 1 --global-batch-size 1536 --rampup-batch-size 16 16 5859375 \
            --train-iters 500000 --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.95 --init-method-std 0.006 --clip-grad 1.0 --fp16 \
            --lr 6.0e-5 --lr-decay-style cosine --min-lr 6.0e-6 --lr-warmup-fraction .001 --lr-decay-iters 430000 \
            --tensor-model-parallel-size 8 --pipeline-model-parallel-size 16 \
            --data-path /data/my-gpt3_00_text_document --vocab-file gpt2-vocab.json --merge-file gpt2-merges.txt --split 949,50,1 \
            --log-interval 100 --save-interval 10000 --eval-interval 1000 --save /ckpt --load /ckpt --eval-iters 10 \
            --tensorboard-dir /tb --vocab-size 51200
        """;

    /// <summary>examples/mixtral/train_mixtral_8x7b_distributed.sh as shipped (2 GPUs, a 2-layer toy of the Mixtral shape).</summary>
    internal const string Mixtral = """
        torchrun --nproc_per_node 2 --nnodes 1 --node_rank 0 --master_addr localhost --master_port 6000 pretrain_gpt.py \
            --use-mcore-models --disable-bias-linear --seq-length 256 --max-position-embeddings 2048 --num-layers 2 \
            --hidden-size 256 --ffn-hidden-size 896 --num-attention-heads 2 --init-method-std 0.01 --attention-dropout 0.0 \
            --hidden-dropout 0.0 --normalization RMSNorm --position-embedding-type rope --swiglu \
            --untie-embeddings-and-output-weights --group-query-attention --num-query-groups 2 --no-masked-softmax-fusion \
            --no-position-embedding --rotary-base 1000000 \
            --num-experts 2 --moe-router-topk 2 --moe-router-load-balancing-type aux_loss --moe-aux-loss-coeff 1e-2 \
            --moe-token-dispatcher-type alltoall --overlap-param-gather --overlap-grad-reduce \
            --tokenizer-type Llama2Tokenizer --tokenizer-model /workspace/Megatron-LM/tokenizer.model --mock-data --split 99990,8,2 \
            --micro-batch-size 1 --global-batch-size 4 --lr 1e-4 --train-iters 7 --min-lr 1.0e-5 --weight-decay 0.1 --clip-grad 1.0 \
            --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1 --expert-model-parallel-size 2 \
            --use-distributed-optimizer --sequence-parallel --eval-iters 10 --no-load-optim --no-load-rng
        """;

    /// <summary>A Qwen3-30B-A3B-shaped MoE launch on 8 nodes x 8 GPUs with MoE parallel folding (ETP 1, EP 8), CP 2, VP, full recompute, DeepEP.</summary>
    internal const string FoldedMoe = """
        torchrun --nproc_per_node=8 --nnodes=8 pretrain_gpt.py --num-layers 48 --hidden-size 2048 --num-attention-heads 32 \
            --moe-ffn-hidden-size 768 --num-experts 128 --moe-router-topk 8 --seq-length 4096 --vocab-size 151936 --bf16 \
            --micro-batch-size 1 --global-batch-size 512 --tensor-model-parallel-size 2 --pipeline-model-parallel-size 4 \
            --num-layers-per-virtual-pipeline-stage 6 --context-parallel-size 2 --expert-model-parallel-size 8 \
            --expert-tensor-parallel-size 1 --sequence-parallel --use-distributed-optimizer --overlap-grad-reduce \
            --overlap-param-gather --recompute-granularity full --recompute-method uniform --recompute-num-layers 1 \
            --moe-token-dispatcher-type flex --moe-enable-deepep --moe-grouped-gemm --moe-frobnicate 3
        """;

    /// <summary>
    /// Qwen3-30B-A3B's model flags as Megatron-LM / slime launch scripts write them (GQA 4 groups, kv-channels 128,
    /// SwiGLU, untied, 128 experts top-8 of width 768) with MoE parallel folding TP 2 x ETP 1 x EP 8 and SP on 16 GPUs.
    /// </summary>
    internal const string Qwen3Moe = """
        torchrun --nproc_per_node 8 --nnodes 2 pretrain_gpt.py --num-layers 48 --hidden-size 2048 --ffn-hidden-size 6144 \
            --num-attention-heads 32 --group-query-attention --num-query-groups 4 --kv-channels 128 --swiglu \
            --untie-embeddings-and-output-weights --normalization RMSNorm --position-embedding-type rope --qk-layernorm \
            --num-experts 128 --moe-ffn-hidden-size 768 --moe-router-topk 8 --moe-layer-freq 1 --seq-length 4096 \
            --vocab-size 151936 --bf16 --micro-batch-size 1 --global-batch-size 256 --tensor-model-parallel-size 2 \
            --expert-model-parallel-size 8 --expert-tensor-parallel-size 1 --sequence-parallel --use-distributed-optimizer \
            --overlap-grad-reduce --moe-grouped-gemm --moe-token-dispatcher-type alltoall
        """;

    /// <summary>
    /// A DeepSeek-V3-shaped launch cut to 8 layers (the first dense, MLA, one shared expert, MTP, FP8 blockwise is not a
    /// recipe here so the command uses tensorwise), flags as Megatron-LM's DeepSeek-V3 examples write them.
    /// </summary>
    internal const string DeepSeekV3Cut = """
        torchrun --nproc_per_node 8 --nnodes 1 pretrain_gpt.py --num-layers 8 --hidden-size 7168 --ffn-hidden-size 18432 \
            --num-attention-heads 128 --multi-latent-attention --q-lora-rank 1536 --kv-lora-rank 512 --qk-head-dim 128 \
            --qk-pos-emb-head-dim 64 --v-head-dim 128 --swiglu --untie-embeddings-and-output-weights \
            --num-experts 256 --moe-ffn-hidden-size 2048 --moe-shared-expert-intermediate-size 2048 --moe-router-topk 8 \
            --moe-layer-freq "([0]*1+[1]*7)" --mtp-num-layers 1 --fp8-format e4m3 --fp8-recipe tensorwise \
            --seq-length 4096 --vocab-size 129280 --bf16 --micro-batch-size 1 --global-batch-size 64 \
            --pipeline-model-parallel-size 2 --expert-model-parallel-size 4 --sequence-parallel
        """;

    [Fact]
    public void Qwen3LaunchReadsTheModelAsThePresetDescribesIt()
    {
        // Oracle: the preset data/models/qwen3-30b-a3b.json (from the Hugging Face config: 48 layers, H 2048, 32 heads,
        // 4 KV heads of 128, SwiGLU, 128 experts top-8 of 768, untied); the vocabulary 151936 padded as Megatron's
        // _vocab_size_with_padding does to a multiple of 128 x TP 2 = 256: 151936 / 256 = 593.5 -> 594 x 256 = 152064;
        // layout by hand: world 16,
        // attention DP = 16 / 2 = 8, EDP = 16 / (8 x 1) = 2, microbatches 256 / (1 x 8) = 32.
        var r = MegatronImport.Parse(Qwen3Moe);
        var preset = ModelPresets.Get("qwen3-30b-a3b", batch: 256);
        var m = ModelSpec.Read(new JsonObjectReader(JsonDocument.Parse(r.Model.ToJsonString()).RootElement, "model", null));
        Assert.Equal((preset.Layers, preset.HiddenSize, preset.AttentionHeads, preset.KeyValueHeads, preset.HeadDim), (m.Layers, m.HiddenSize, m.AttentionHeads, m.KeyValueHeads, m.HeadDim));
        Assert.Equal((preset.Experts, preset.TopK, preset.ExpertFfnHiddenSize, preset.FfnActivation, preset.TieEmbeddings), (m.Experts, m.TopK, m.ExpertFfnHiddenSize, m.FfnActivation, m.TieEmbeddings));
        Assert.Equal((preset.SequenceLength, preset.DenseLayers, preset.SharedExperts), (m.SequenceLength, m.DenseLayers, m.SharedExperts));
        Assert.Equal(152064L, m.Vocabulary);
        var s = r.Strategy;
        Assert.Equal((8, 2, 1, 2, 1, 8, 32), (s.EP, s.TP, s.ETP, s.DP, s.PP, s.AttentionDataParallelSize, s.Microbatches));
        Assert.True(s.SequenceParallel);
        Assert.Contains("--ffn-hidden-size", r.NoEffect);   // every layer is MoE: the dense width is unused
        Assert.Contains(r.NotModelled, n => n.Flag == "--qk-layernorm");
        Assert.Empty(r.Unknown);
        s.CheckFits(m, r.Gpus);   // the imported folded layout is priced (ETP != TP with SP)
    }

    [Fact]
    public void DeepSeekLaunchReadsMlaSharedExpertDenseFirstLayersMtpAndFp8()
    {
        // Oracle: hand reading of Megatron's flags: MLA q 1536 / kv 512 / qk-nope 128 / rope 64 / v 128; one shared
        // expert of 2048; --moe-layer-freq ([0]*1+[1]*7): first layer dense (width --ffn-hidden-size 18432), experts 2048;
        // --mtp-num-layers 1; --fp8-format with the tensorwise recipe = Float8CurrentScaling = "fp8-current";
        // vocabulary 129280 = 1010 x 128 (TP 1) unpadded.
        var r = MegatronImport.Parse(DeepSeekV3Cut);
        var md = r.Model;
        Assert.Equal(18432L, (long)md["ffnHiddenSize"]!);
        Assert.Equal(2048L, (long)md["moeFfnHiddenSize"]!);
        Assert.Equal((1, 2048L), ((int)md["sharedExperts"]!, (long)md["sharedExpertFfnHiddenSize"]!));
        Assert.Equal(1, (int)md["denseLayers"]!);
        Assert.Equal(1, (int)md["mtpLayers"]!);
        Assert.Equal("fp8-current", (string)md["precision"]!);
        Assert.Equal(129280L, (long)md["vocabulary"]!);
        var m = ModelSpec.Read(new JsonObjectReader(JsonDocument.Parse(md.ToJsonString()).RootElement, "model", null));
        Assert.Equal(new MlaSpec(1536, 512, 128, 64, 128), m.Mla);
        Assert.Empty(r.Unknown);
        Assert.DoesNotContain(r.NotModelled, n => n.Flag is "--multi-latent-attention" or "--moe-layer-freq" or "--fp8-format" or "--swiglu");
    }

    [Theory]
    [InlineData("1", 0, false)]
    [InlineData("([0]*3+[1]*5)", 3, false)]
    [InlineData("[0,0,1,1,1,1,1,1]", 2, false)]
    [InlineData("2", 0, true)]                 // every second layer MoE: not a first-k-dense pattern
    [InlineData("([1]*4+[0]*4)", 0, true)]     // dense last layers
    [InlineData("[0]*99999999999+[1]", 0, true)]
    public void MoeLayerFrequencyMapsTheFirstKDensePatternOnly(string value, int dense, bool listed)
    {
        // Oracle: Megatron's --moe-layer-freq semantics (an int N: every N-th layer MoE; a list: 1 = MoE per layer) on 8 layers.
        var notModelled = new List<(string, string)>();
        Assert.Equal(dense, MegatronImport.DenseLayersOf(value, 8, notModelled));
        Assert.Equal(listed, notModelled.Count == 1);
    }

    [Fact]
    public void Gpt3LaunchReadsAsTp8Pp16OnOneHundredTwentyEightGpus()
    {
        // Oracle: hand derivation from Megatron's arguments: world 8 x 16 = 128, DP = 128 / (8 x 16) = 1,
        // microbatches = 1536 / (1 x 1) = 1536, ffn defaults to 4 x 12288, fp16, no --overlap-grad-reduce.
        var r = MegatronImport.Parse(Gpt3);
        Assert.Equal(128, r.Gpus);
        Assert.Equal(new StrategySpec(1, 8, 16, 1, Microbatches: 1536) { Mode = WorkloadMode.Training, OverlapGradReduce = false }, r.Strategy);
        Assert.Equal(49152L, (long)r.Model["ffnHiddenSize"]!);
        Assert.Equal("fp16", (string)r.Model["dtype"]!);
        Assert.Equal(51200L, (long)r.Model["vocabulary"]!);
        Assert.Empty(r.Unknown);
        Assert.Contains("--lr-decay-style", r.NoEffect);
        Assert.Contains("--rampup-batch-size", r.NoEffect);
    }

    [Fact]
    public void MixtralExampleKeepsEveryFlagItCannotExpressListed()
    {
        // Oracle: hand derivation: world 2, EP 2 -> EDP = 2 / (1 x 2 x 1) = 1, attention DP = 2, microbatches 4 / (1 x 2) = 2;
        // SP, distributed optimizer and both overlaps as given; GQA (2 query groups), SwiGLU and untied output weights
        // read into the model (they were listed as not modelled before issue 11's model fields were mapped); the missing
        // vocabulary listed, not dropped.
        var r = MegatronImport.Parse(Mixtral);
        Assert.Equal(2, r.Gpus);
        var s = r.Strategy;
        Assert.Equal((2, 1, 1, 1, 2), (s.EP, s.TP, s.PP, s.DP, s.Microbatches));
        Assert.Equal(2, s.AttentionDataParallelSize);
        Assert.True(s.SequenceParallel && s.UseDistributedOptimizer && s.OverlapGradReduce && s.OverlapParamGather);
        Assert.Equal(896L, (long)r.Model["ffnHiddenSize"]!);
        Assert.Equal("fp32", (string)r.Model["dtype"]!);
        var listed = r.NotModelled.Select(n => n.Flag).ToArray();
        Assert.Equal(2, (int)r.Model["kvHeads"]!);
        Assert.Equal("swiglu", (string)r.Model["ffnActivation"]!);
        Assert.False((bool)r.Model["tieEmbeddings"]!);
        Assert.DoesNotContain("--swiglu", listed);
        Assert.Contains("(vocabulary)", listed);
        Assert.Empty(r.Unknown);
    }

    [Fact]
    public void FoldedMoeLaunchReadsFoldingContextAndVirtualStages()
    {
        // Oracle: hand derivation: world 64; attention DP = 64 / (2 x 4 x 2) = 4; experts EDP = 64 / (4 x 8 x 1) = 2;
        // vp = 48 / (4 x 6) = 2; microbatches = 512 / (1 x 4) = 128; experts use --moe-ffn-hidden-size; the unknown
        // flag is listed with its value.
        var r = MegatronImport.Parse(FoldedMoe);
        var s = r.Strategy;
        Assert.Equal(64, r.Gpus);
        Assert.Equal((8, 2, 4, 2), (s.EP, s.TP, s.PP, s.DP));
        Assert.Equal((1, 2, 4, 2, 128), (s.ETP, s.CP, s.AttentionDataParallelSize, s.VirtualStages, s.Microbatches));
        Assert.Equal(PipelineSchedule.Interleaved, s.Schedule);
        Assert.True(s.Recompute && s.SequenceParallel && s.UseDistributedOptimizer);
        Assert.Equal(MoeAllToAllOverlap.DeepEp, s.MoeAllToAllOverlap);
        Assert.Equal(64, s.GpuCount);
        Assert.Equal(768L, (long)r.Model["ffnHiddenSize"]!);
        Assert.Equal(["--moe-frobnicate 3"], r.Unknown);
    }

    [Theory]
    [InlineData(Gpt3)]
    [InlineData(Mixtral)]
    [InlineData(FoldedMoe)]
    [InlineData(Qwen3Moe)]
    [InlineData(DeepSeekV3Cut)]
    public void ImportRoundTripsThroughTheScenarioAndBackToFlags(string command)
    {
        // Oracle: round trip: command -> scenario JSON -> strategy and model read back (StrategySpec.Read, ModelSpec.Read)
        // equal the import; the scenario's Megatron flags re-imported give the same strategy and model.
        var r = MegatronImport.Parse(command);
        var scenario = r.Scenario("round-trip", "H100-SXM");
        using var doc = JsonDocument.Parse(scenario.ToJsonString());
        var strategy = StrategySpec.Read(new JsonObjectReader(doc.RootElement.GetProperty("strategy"), "strategy", null));
        Assert.Equal(r.Strategy, strategy);
        var model = ModelSpec.Read(new JsonObjectReader(doc.RootElement.GetProperty("model"), "model", null));
        Assert.Equal((int)r.Model["layers"]!, model.Layers);
        Assert.Equal((long)r.Model["batch"]!, model.Batch);
        var again = MegatronImport.Parse(MegatronImportResult.ToMegatronFlags(strategy, r.Model, r.Gpus));
        Assert.Equal(r.Strategy, again.Strategy);
        Assert.True(JsonNode.DeepEquals(r.Model, again.Model), $"{r.Model.ToJsonString()} vs {again.Model.ToJsonString()}");
        Assert.Empty(again.Unknown);
    }

    [Fact]
    public void CliWritesTheScenarioAndListsWhatItDidNotRead()
    {
        // Oracle: the bar for the CLI: JSON on stdout that loads, unknown flags on stderr, exit 0; bad input one line, exit 2.
        var o = new StringWriter();
        var e = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["import-megatron", FoldedMoe], o, e));
        using var doc = JsonDocument.Parse(o.ToString());
        Assert.Equal(64, doc.RootElement.GetProperty("hardware").GetProperty("gpus").GetInt32());
        Assert.Contains("unknown flag (not read): --moe-frobnicate 3", e.ToString());
        var bad = new StringWriter();
        Assert.Equal(2, Cli.Cli.Run(["import-megatron", "pretrain_gpt.py --num-layers 4 --hidden-size 64 --num-attention-heads 4 --seq-length 128 --global-batch-size 8 --tensor-model-parallel-size $TP", "--gpus", "8"], new StringWriter(), bad));
        Assert.Contains("--tensor-model-parallel-size = $TP", bad.ToString());
    }
}
