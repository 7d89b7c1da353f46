using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The founding document (<c>shared/seed/dag-performance-analysis.md</c>) as written, mistakes included, so that
/// its "Final Runtime Representation" can be re-derived from a critical path. Two layouts exist there:
/// EP = n (one expert per GPU, §1) and TP x PP (§2). Where a shape here differs from Megatron-LM, the comment
/// says which section of the document it follows; <see cref="CorrectedDerivation"/> has the correction.
/// </summary>
internal static class SeedDerivation
{
    /// <param name="expectedOperations">Room to reserve up front (an estimate; the builder still grows past it).</param>
    public static OperatorDag Build(ModelSpec model, StrategySpec strategy, double expectedOperations = 0)
    {
        var b = new DagBuilder(strategy.GpuCount, model.ElementBytes, model.Dtype, $"seed derivation, {strategy}");
        b.Reserve(expectedOperations);
        if (strategy.EP > 1 || (strategy.TP == 1 && strategy.PP == 1)) BuildExpertParallel(b, model, strategy.EP);
        else BuildTensorPipeline(b, model, strategy);
        return b.Build();
    }

    /// <summary>§1 "Proposed Cross-Node Expert Parallelism (EP=16)".</summary>
    private static void BuildExpertParallel(DagBuilder b, ModelSpec model, int gpus)
    {
        long t = model.Tokens, h = model.HiddenSize, s = model.SequenceLength, d = model.HeadDim;
        // §"Final Runtime Representation": avg_tokens_per_expert = (1024 x 10000) / 16, i.e. tokens x topK / experts.
        var tokensPerExpert = CeilDiv(t * model.TopK, model.Experts);
        var expertsPerGpu = Math.Max(1, model.Experts / gpus);
        var previousOutputs = Array.Empty<int>();
        for (var layer = 0; layer < model.Layers; layer++)
        {
            var outputs = new List<int>();
            for (var g = 0; g < gpus; g++)
            {
                // §1 "MHA QKV Linear Operations": every projection is [batch x seq, hidden] x [hidden, hidden] with
                // m = all 10,240,000 tokens on the critical path, i.e. each GPU runs attention for every token.
                // Corrected: attention is data-parallel over the EP ranks (m = tokens / EP), see CorrectedDerivation.
                var q = b.AddMatmul(OpKind.QProjection, g, new(t, h, h), layer, previousOutputs);
                var k = b.AddMatmul(OpKind.KProjection, g, new(t, h, h), layer, previousOutputs);
                var v = b.AddMatmul(OpKind.VProjection, g, new(t, h, h), layer, previousOutputs);
                var heads = new int[model.AttentionHeads];
                for (var head = 0; head < model.AttentionHeads; head++)
                {
                    // §1 "Attention Computation": Q x K^T as [batch x seq, d_k] x [d_k, seq] per head (same FLOPs as
                    // one [seq, d_k] x [d_k, seq] product per sequence, which is how it really runs).
                    var score = b.AddMatmul(OpKind.AttentionScore, g, new(t, d, s), layer, [q, k], head);
                    heads[head] = b.AddMatmul(OpKind.AttentionValue, g, new(t, s, d), layer, [score, v], head);
                }
                var o = b.AddMatmul(OpKind.OutputProjection, g, new(t, h, h), layer, heads);
                // §1 "Gate Network": [batch x seq, hidden] x [hidden, num_experts].
                var gate = b.AddMatmul(OpKind.Gate, g, new(t, h, model.Experts), layer, [o]);
                // §1 "Expert Routing": tokens reach their expert with no all-to-all priced (the document has none).
                // Corrected: explicit all-to-all dispatch and combine over the EP group.
                for (var j = 0; j < expertsPerGpu; j++)
                {
                    var expert = g * expertsPerGpu + j;
                    var up = b.AddMatmul(OpKind.ExpertUp, g, new(tokensPerExpert, h, model.FfnHiddenSize), layer, [gate], expert);
                    outputs.Add(b.AddMatmul(OpKind.ExpertDown, g, new(tokensPerExpert, model.FfnHiddenSize, h), layer, [up], expert));
                }
            }
            // §1 "Aggregation": the next layer needs every expert's output; the document gives it no cost.
            previousOutputs = outputs.ToArray();
        }
    }

    /// <summary>§2 "Baseline MoE (TP=8, PP=2)".</summary>
    private static void BuildTensorPipeline(DagBuilder b, ModelSpec model, StrategySpec strategy)
    {
        int tp = strategy.TP, pp = strategy.PP;
        long t = model.Tokens, h = model.HiddenSize, s = model.SequenceLength;
        var layersPerStage = model.Layers / pp;
        // §2 "MHA QKV Linear (per TP rank)": [batch x seq, hidden/8] x [hidden/8, hidden/8], i.e. both the input
        // and the output width divided by TP. Corrected (Megatron column-parallel): [T, H] x [H, H/TP].
        var hShard = h / tp;
        // §2 "Attention Computation (per TP rank)": d_k / 8 = 64 with 2 heads per rank, i.e. the head dimension is
        // split AND the heads are split. Corrected: heads / TP heads per rank, each with the full head dimension.
        var headsPerRank = model.AttentionHeads / tp;
        var dShard = model.HeadDim / tp;
        // §2 "Expert Feed-Forward Networks (per GPU)": "Each GPU hosts 8 experts" (16 experts over 2 stages), each
        // unsharded with avg_tokens_per_expert = tokens / experts; the document then counts "64 total experts".
        // Corrected: the experts' FFNs are TP-sharded (column-parallel up, row-parallel down) and all-reduced.
        var expertsPerRank = Math.Max(1, model.Experts / pp);
        var tokensPerExpert = CeilDiv(t * model.TopK, model.Experts);
        var stageInputs = new int[tp]; // per rank: op the stage's first layer waits for (-1: none)
        Array.Fill(stageInputs, -1);
        for (var stage = 0; stage < pp; stage++)
        {
            var previousLayerOutputs = Array.Empty<int>();
            for (var local = 0; local < layersPerStage; local++)
            {
                var layer = stage * layersPerStage + local;
                var outputs = new int[tp];
                for (var r = 0; r < tp; r++)
                {
                    var g = strategy.Rank(0, stage, 0, r);
                    ReadOnlySpan<int> input = local > 0 ? previousLayerOutputs : stageInputs[r] >= 0 ? [stageInputs[r]] : [];
                    var q = b.AddMatmul(OpKind.QProjection, g, new(t, hShard, hShard), layer, input);
                    var k = b.AddMatmul(OpKind.KProjection, g, new(t, hShard, hShard), layer, input);
                    var v = b.AddMatmul(OpKind.VProjection, g, new(t, hShard, hShard), layer, input);
                    var heads = new int[headsPerRank];
                    for (var head = 0; head < headsPerRank; head++)
                    {
                        var headIndex = r * headsPerRank + head;
                        var score = b.AddMatmul(OpKind.AttentionScore, g, new(t, dShard, s), layer, [q, k], headIndex);
                        heads[head] = b.AddMatmul(OpKind.AttentionValue, g, new(t, s, dShard), layer, [score, v], headIndex);
                    }
                    // §2 "MHA output (TP=8)": Get_Time(10240000, 1024, 1024). Corrected: row-parallel [T, H/TP] x [H/TP, H].
                    var last = b.AddMatmul(OpKind.OutputProjection, g, new(t, hShard, hShard), layer, heads);
                    // §2 lists no gate in its longest path, so none is built here (§1 has one).
                    // §2 "All-Reduce Operations" are named but absent from the formula: no all-reduce is priced.
                    for (var j = 0; j < expertsPerRank; j++)
                    {
                        var expert = r * expertsPerRank + j;
                        var up = b.AddMatmul(OpKind.ExpertUp, g, new(tokensPerExpert, h, model.FfnHiddenSize), layer, [last], expert);
                        last = b.AddMatmul(OpKind.ExpertDown, g, new(tokensPerExpert, model.FfnHiddenSize, h), layer, [up], expert);
                    }
                    outputs[r] = last;
                }
                previousLayerOutputs = outputs;
            }
            if (stage + 1 < pp)
            {
                // §2 "Pipeline communication: Communication latency between stages": the activation [T, H] goes
                // from each rank to the same rank of the next stage after the stage's last layer.
                for (var r = 0; r < tp; r++)
                {
                    var from = strategy.Rank(0, stage, 0, r);
                    var to = strategy.Rank(0, stage + 1, 0, r);
                    stageInputs[r] = b.AddSend(from, to, t * h * model.ElementBytes, previousLayerOutputs);
                }
            }
        }
    }

    internal static long CeilDiv(long a, long b) => (a + b - 1) / b;
}
