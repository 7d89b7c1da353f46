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
        // SP, distributed optimizer and both overlaps as given; GQA, SwiGLU and the missing vocabulary listed, not dropped.
        var r = MegatronImport.Parse(Mixtral);
        Assert.Equal(2, r.Gpus);
        var s = r.Strategy;
        Assert.Equal((2, 1, 1, 1, 2), (s.EP, s.TP, s.PP, s.DP, s.Microbatches));
        Assert.Equal(2, s.AttentionDataParallelSize);
        Assert.True(s.SequenceParallel && s.UseDistributedOptimizer && s.OverlapGradReduce && s.OverlapParamGather);
        Assert.Equal(896L, (long)r.Model["ffnHiddenSize"]!);
        Assert.Equal("fp32", (string)r.Model["dtype"]!);
        var listed = r.NotModelled.Select(n => n.Flag).ToArray();
        Assert.Contains("--group-query-attention", listed);
        Assert.Contains("--num-query-groups", listed);
        Assert.Contains("--swiglu", listed);
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
