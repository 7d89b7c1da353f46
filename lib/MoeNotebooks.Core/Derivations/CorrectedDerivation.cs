using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The corrected derivation, for any EP x TP x PP x DP and microbatch count:
/// <list type="bullet">
/// <item>Megatron-LM tensor parallelism: column-parallel Q, K, V [T, H] x [H, H/TP]; heads / TP heads per rank with the
/// full head dimension; row-parallel output [T, H/TP] x [H/TP, H] followed by an all-reduce; expert FFNs sharded the
/// same way (column-parallel up, row-parallel down) and all-reduced.</item>
/// <item>Pipeline: layers split evenly over stages (layers / PP per stage), activations sent stage to stage,
/// microbatches issued in GPipe order.</item>
/// <item>Expert parallelism: attention is data-parallel over the EP ranks (each processes tokens / EP), tokens reach
/// their experts through an all-to-all dispatch and come back through an all-to-all combine.</item>
/// <item>Data parallelism: the batch is split over DP replicas.</item>
/// <item>Attention products are batched per sequence ([seq, d] x [d, seq] for each sequence), with softmax fused
/// (flash-attention style, no score matrix written to HBM); layer norms and residual adds are memory-bound
/// elementwise operations.</item>
/// </list>
/// Uniform routing: every expert receives tokens x topK / experts tokens (rounded up).
/// </summary>
internal static class CorrectedDerivation
{
    public static OperatorDag Build(ModelSpec model, StrategySpec st)
    {
        var b = new DagBuilder(st.GpuCount, model.ElementBytes, model.Dtype, $"corrected derivation, {st}");
        int tp = st.TP, ep = st.EP, pp = st.PP;
        long h = model.HiddenSize, s = model.SequenceLength, d = model.HeadDim, e = model.ElementBytes, f = model.FfnHiddenSize;
        var sequencesPerRank = model.Batch / ((long)st.DP * ep * st.Microbatches);
        var tokensPerRank = sequencesPerRank * s;                        // attention is data-parallel over EP
        var headsPerRank = model.AttentionHeads / tp;
        var expertsPerRank = model.Experts / ep;
        // Uniform routing: the EP group's tokens x topK spread evenly over the experts.
        var tokensPerExpert = SeedDerivation.CeilDiv(tokensPerRank * ep * model.TopK, model.Experts);
        var activationBytes = tokensPerRank * h * e;
        var stageLayers = SplitLayers(model.Layers, pp);

        var last = new int[st.GpuCount];   // per GPU: the op producing its current activation (-1: none)
        var gate = new int[st.GpuCount];
        var tmp = new int[Math.Max(tp, ep)];
        for (var dp = 0; dp < st.DP; dp++)
        {
            for (var mb = 0; mb < st.Microbatches; mb++)
            {
                for (var g = 0; g < last.Length; g++) last[g] = -1;
                for (var stage = 0; stage < pp; stage++)
                {
                    var (firstLayer, layerCount) = stageLayers[stage];
                    for (var layer = firstLayer; layer < firstLayer + layerCount; layer++)
                    {
                        // Attention block on every (ep, tp) rank of this stage.
                        for (var er = 0; er < ep; er++)
                        {
                            for (var tr = 0; tr < tp; tr++)
                            {
                                var g = st.Rank(dp, stage, er, tr);
                                var norm = b.AddElementwise(g, 2 * activationBytes, layer, Deps(last[g]), index: 0, microbatch: mb);
                                // Seed §2 writes [T, H/8] x [H/8, H/8]; Megatron's column-parallel projection keeps the
                                // full input width: [T, H] x [H, H/TP]. Under EP, seed §1 uses all T tokens; here T / EP.
                                var q = b.AddMatmul(OpKind.QProjection, g, new(tokensPerRank, h, h / tp), layer, [norm], microbatch: mb);
                                var k = b.AddMatmul(OpKind.KProjection, g, new(tokensPerRank, h, h / tp), layer, [norm], microbatch: mb);
                                var v = b.AddMatmul(OpKind.VProjection, g, new(tokensPerRank, h, h / tp), layer, [norm], microbatch: mb);
                                var heads = new int[headsPerRank];
                                for (var hr = 0; hr < headsPerRank; hr++)
                                {
                                    var head = tr * headsPerRank + hr;
                                    // Seed §2 splits the head dimension (d_k / 8 = 64) as well as the heads; Megatron
                                    // splits heads only: heads / TP heads per rank, each of full dimension d = H / heads.
                                    var score = b.AddMatmul(OpKind.AttentionScore, g, new(s, d, s, sequencesPerRank), layer, [q, k], head, mb);
                                    heads[hr] = b.AddMatmul(OpKind.AttentionValue, g, new(s, s, d, sequencesPerRank), layer, [score, v], head, mb);
                                }
                                // Row-parallel output [T, H/TP] x [H/TP, H] (seed §2: [T, H/8] x [H/8, H/8]).
                                last[g] = b.AddMatmul(OpKind.OutputProjection, g, new(tokensPerRank, h / tp, h), layer, heads, microbatch: mb);
                            }
                            if (tp > 1) AllReduceTensorGroup(b, st, dp, stage, er, OpKind.AttentionAllReduce, activationBytes, layer, mb, last, tmp);
                        }
                        // Residual + norm, then the router on every rank (replicated over TP).
                        for (var er = 0; er < ep; er++)
                        {
                            for (var tr = 0; tr < tp; tr++)
                            {
                                var g = st.Rank(dp, stage, er, tr);
                                var norm = b.AddElementwise(g, 3 * activationBytes, layer, [last[g]], index: 1, microbatch: mb);
                                gate[g] = b.AddMatmul(OpKind.Gate, g, new(tokensPerRank, h, model.Experts), layer, [norm], microbatch: mb);
                                last[g] = gate[g];
                            }
                        }
                        // Seed §1 prices no token routing; under EP the tokens really move: all-to-all dispatch over
                        // each EP group (one group per TP rank index).
                        var routedBytes = tokensPerRank * model.TopK * h * e;
                        if (ep > 1)
                            for (var tr = 0; tr < tp; tr++) AllToAll(b, st, dp, stage, tr, OpKind.AllToAllDispatch, routedBytes, layer, mb, last, tmp);
                        // Experts: experts / EP per rank, each FFN sharded over TP (column-parallel up, row-parallel down).
                        for (var er = 0; er < ep; er++)
                        {
                            for (var tr = 0; tr < tp; tr++)
                            {
                                var g = st.Rank(dp, stage, er, tr);
                                var input = last[g];
                                var downs = new int[expertsPerRank];
                                for (var j = 0; j < expertsPerRank; j++)
                                {
                                    var expert = er * expertsPerRank + j;
                                    var up = b.AddMatmul(OpKind.ExpertUp, g, new(tokensPerExpert, h, f / tp), layer, [input], expert, mb);
                                    downs[j] = b.AddMatmul(OpKind.ExpertDown, g, new(tokensPerExpert, f / tp, h), layer, [up], expert, mb);
                                }
                                last[g] = downs.Length == 1 ? downs[0] : b.AddElementwise(g, 0, layer, downs, index: 3, microbatch: mb);
                            }
                            if (tp > 1)
                                AllReduceTensorGroup(b, st, dp, stage, er, OpKind.ExpertAllReduce, expertsPerRank * tokensPerExpert * h * e, layer, mb, last, tmp);
                        }
                        if (ep > 1)
                            for (var tr = 0; tr < tp; tr++) AllToAll(b, st, dp, stage, tr, OpKind.AllToAllCombine, routedBytes, layer, mb, last, tmp);
                        for (var er = 0; er < ep; er++)
                            for (var tr = 0; tr < tp; tr++)
                            {
                                var g = st.Rank(dp, stage, er, tr);
                                last[g] = b.AddElementwise(g, 3 * activationBytes, layer, [last[g]], index: 2, microbatch: mb);
                            }
                    }
                    if (stage + 1 < pp)
                    {
                        for (var er = 0; er < ep; er++)
                            for (var tr = 0; tr < tp; tr++)
                            {
                                var from = st.Rank(dp, stage, er, tr);
                                var to = st.Rank(dp, stage + 1, er, tr);
                                last[to] = b.AddCommunication(OpKind.PipelineSend, b.Group([from, to]), activationBytes, -1, [last[from]], microbatch: mb);
                            }
                    }
                }
            }
        }
        return b.Build();
    }

    /// <summary>Layers per stage: as even as possible, earlier stages take the remainder.</summary>
    internal static (int First, int Count)[] SplitLayers(int layers, int stages)
    {
        var result = new (int, int)[stages];
        var first = 0;
        for (var i = 0; i < stages; i++)
        {
            var count = layers / stages + (i < layers % stages ? 1 : 0);
            result[i] = (first, count);
            first += count;
        }
        return result;
    }

    private static ReadOnlySpan<int> Deps(int op) => op < 0 ? [] : new[] { op };

    private static void AllReduceTensorGroup(DagBuilder b, StrategySpec st, int dp, int stage, int er, OpKind kind, long bytes, int layer, int mb, int[] last, int[] tmp)
    {
        var members = tmp.AsSpan(0, st.TP);
        var deps = new int[st.TP];
        for (var tr = 0; tr < st.TP; tr++) { members[tr] = st.Rank(dp, stage, er, tr); deps[tr] = last[members[tr]]; }
        var op = b.AddCommunication(kind, b.Group(members), bytes, layer, deps, microbatch: mb);
        foreach (var g in members) last[g] = op;
    }

    private static void AllToAll(DagBuilder b, StrategySpec st, int dp, int stage, int tr, OpKind kind, long bytesPerGpu, int layer, int mb, int[] last, int[] tmp)
    {
        var members = tmp.AsSpan(0, st.EP);
        var deps = new int[st.EP];
        for (var er = 0; er < st.EP; er++) { members[er] = st.Rank(dp, stage, er, tr); deps[er] = last[members[er]]; }
        var op = b.AddCommunication(kind, b.Group(members), bytesPerGpu, layer, deps, microbatch: mb);
        foreach (var g in members) last[g] = op;
    }
}
