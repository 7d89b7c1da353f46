using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// What every block needs to know about the layout: the model, the strategy, the DAG being built, and the shapes
/// that follow from them per rank (tokens, heads, experts). Collective helpers are in LayerContext.Collectives.cs.
/// </summary>
internal sealed partial class LayerContext
{
    public ModelSpec M { get; }
    public StrategySpec St { get; }
    public DagBuilder B { get; }
    public bool Training { get; }

    /// <summary>Attention is data-parallel over the EP ranks (tokens move by all-to-all) rather than tensor-parallel over them.</summary>
    public bool AttentionDp { get; }

    /// <summary>Ranks sharing the attention heads: TP (data-parallel attention) or TP x EP.</summary>
    public int AttnTp { get; }
    public int HeadsPerRank { get; }
    public int ExpertsPerRank { get; }
    public long H { get; }
    public long S { get; }
    public long D { get; }
    public long E { get; }
    public long F { get; }
    public long SequencesPerRank { get; }
    public long TokensPerRank { get; }

    /// <summary>Width of the tokens routed experts see and the all-to-all moves: H, or the latent size of a latent MoE.</summary>
    public long ExpertWidth => M.ExpertInputWidth;

    /// <summary>One rank's [tokens, H] activation in bytes.</summary>
    public long ActivationBytes { get; }

    /// <summary>Tokens each expert processes, per all-to-all chunk: [chunk][expert].</summary>
    public long[][] ExpertTokensByChunk { get; }
    public long RoutedTokensPerRank { get; }

    /// <summary>Key/value heads per attention rank: kvHeads / TP, or 1 when TP exceeds kvHeads (each rank holds a replica of its group's KV head).</summary>
    public int KvHeadsPerRank { get; }

    /// <summary>The precision recipe's GEMM quantization, or null when GEMMs run in the model dtype.</summary>
    public PrecisionRecipe? Quantization { get; }

    /// <summary>HBM bytes of the softmax (and dropout) passes over materialized scores (0 with a fused kernel).</summary>
    public (long Forward, long Backward) ScoreBytes { get; }

    /// <summary>
    /// One attention product per head and one expert's GEMMs and passes per expert (the oracle,
    /// <see cref="DagFactory.BuildDagProductsApart"/>) instead of one repeated product for all of a rank's heads and
    /// for each run of its experts that receive equal tokens (<see cref="DagBuilder.AddRepeatedMatmul"/>, the default).
    /// </summary>
    public bool ProductsApart { get; init; }

    /// <summary>
    /// A rank's heads' products of one kind, emitted by <paramref name="emit"/>(head, repeat): one repeated product
    /// (head 0, repeat = heads), or with <see cref="ProductsApart"/> one per head (repeat 1).
    /// </summary>
    public int[] PerHead(Func<int, int, int> emit)
    {
        var n = ProductsApart ? HeadsPerRank : 1;
        var ops = new int[n];
        for (var hr = 0; hr < n; hr++) ops[hr] = emit(hr, HeadsPerRank / n);
        return ops;
    }

    public LayerContext(ModelSpec model, StrategySpec st, DagBuilder builder)
    {
        M = model;
        St = st;
        B = builder;
        Training = st.Mode == WorkloadMode.Training;
        AttentionDp = st.Attention == AttentionPlacement.DataParallel;
        H = model.HiddenSize; S = model.SequenceLength; D = model.HeadDim; E = model.ElementBytes; F = model.FfnHiddenSize;
        SequencesPerRank = model.Batch / ((long)(AttentionDp ? st.AttentionDataParallelSize : st.DP) * st.Microbatches);
        TokensPerRank = RoutingOutcome.AttentionTokensPerRank(model, st);
        ActivationBytes = TokensPerRank * H * E;
        // Seed §2 splits the head dimension (d_k / 8 = 64) as well as the heads; Megatron splits heads only.
        AttnTp = AttentionDp ? st.TP : st.TP * st.EP;
        HeadsPerRank = model.AttentionHeads / AttnTp;
        ScoreBytes = ComputeScoreBytes(model, st, SequencesPerRank, HeadsPerRank);
        KvHeadsPerRank = Math.Max(1, model.KeyValueHeads / AttnTp);
        if (model.Precision is { Quantizes: true } recipe)
        {
            Quantization = recipe;
            foreach (var kind in Enum.GetValues<OpKind>().Where(k => k.IsLinearLayer()))
                builder.SetMatmulDtype(kind, recipe.GemmDtype, recipe.GemmOperandBytes);
        }
        if (!model.IsDense)
        {
            ExpertsPerRank = model.Experts / st.EP;
            // Routing: the EP group's tokens x topK spread over the experts by the routing distribution, capped by
            // the capacity factor (seed §1 assumes avg_tokens_per_expert, i.e. uniform, and no capacity limit).
            var processed = RoutingOutcome.Of(model, st)!.TokensPerExpert;
            RoutedTokensPerRank = MoeSourceTokensPerRank * model.TopK;
            ExpertTokensByChunk = new long[st.AllToAllChunks][];
            for (var c = 0; c < st.AllToAllChunks; c++)
                ExpertTokensByChunk[c] = processed.Select(t => t / st.AllToAllChunks + (c < t % st.AllToAllChunks ? 1 : 0)).ToArray();
        }
        else ExpertTokensByChunk = [];
    }

    /// <summary>
    /// HBM bytes of the softmax (and dropout) passes over one rank's materialized scores, E = sequences x heads x s x s
    /// elements of e bytes. Forward: the fused scale-mask-softmax reads the scores and writes the probabilities (2Ee);
    /// dropout reads them, writes the result and a one-byte mask (2Ee + E). Backward: the softmax gradient reads the
    /// incoming gradient and the probabilities and writes the score gradient (3Ee); dropout's reads the gradient and
    /// the mask and writes (2Ee + E). A fused (flash) kernel has none of this traffic.
    /// </summary>
    internal static (long Forward, long Backward) ComputeScoreBytes(ModelSpec model, StrategySpec st, long sequencesPerRank, long headsPerRank)
    {
        if (st.AttentionKernel == AttentionKernel.Fused) return (0, 0);
        var elements = sequencesPerRank * headsPerRank * model.SequenceLength * model.SequenceLength;
        var e = (long)model.ElementBytes;
        return st.AttentionKernel == AttentionKernel.MaterializedDropout
            ? (elements * (4 * e + 1), elements * (5 * e + 1))
            : (elements * 2 * e, elements * 3 * e);
    }

    public static ReadOnlySpan<int> Deps(int op) => op < 0 ? [] : new[] { op };

    /// <summary>
    /// Rank folding (<see cref="RankSymmetry"/>): true when <paramref name="gpus"/>[<paramref name="li"/>] is folded onto
    /// a rank of the same site emitted earlier in this loop; then its result is the representative's and its operations
    /// are skipped (<see cref="DagBuilder.CatchUp"/>). Only for loop bodies whose operations depend on the rank through
    /// its GPU id and head or expert labels alone; the folding property test (whole DAG as oracle) covers them.
    /// </summary>
    public bool SkipFoldedRank(int[] gpus, int li, int[] last)
    {
        // A zero-bubble B pass defers weight gradients per GPU to its W pass: emit them all (checked) instead.
        if (DeferredWeightGradients is not null || !B.FoldsRanks) return false;
        if (!ReferenceEquals(gpus, _foldSite)) IndexRepresentatives(gpus);
        var r = _foldRepresentative[li];
        if (r < 0) return false;
        last[li] = last[r];
        B.CatchUp(gpus[li]);
        return true;
    }

    // The site GPU array _foldRepresentative describes (site arrays are built per pipeline item and not changed after),
    // and per local rank the local index of its rank representative earlier in that array (-1: none, emit it).
    private int[]? _foldSite;
    private int[] _foldRepresentative = [];

    private void IndexRepresentatives(int[] gpus)
    {
        if (_foldRepresentative.Length < gpus.Length) _foldRepresentative = new int[gpus.Length];
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            _foldRepresentative[li] = B.IsFoldedRank(g) ? Array.IndexOf(gpus, B.RankRepresentative(g), 0, li) : -1;
        }
        _foldSite = gpus;
    }

    /// <summary>
    /// Where weight-gradient GEMMs go while a zero-bubble input-gradient pass (B) is emitted: null (the default) emits
    /// each dW right after its dX, as every schedule without a B/W split does; a list collects them instead, for the
    /// schedule's weight-gradient pass (W) to issue later (<see cref="EmitWeightGradients"/>).
    /// </summary>
    public List<DeferredWeightGradient>? DeferredWeightGradients { get; set; }

    /// <summary>
    /// Adds dX = dY W^T (shape m x n . n x k) and dW = X^T dY (k x m . m x n); returns dX. <paramref name="repeat"/> > 1:
    /// that many identical products' gradients (a fused attention kernel's heads, experts with equal tokens,
    /// <see cref="DagBuilder.AddRepeatedMatmul"/>), all dX then all dW; the stream runs them back to back either way.
    /// </summary>
    public int Backward(OpKind kind, int g, MatmulShape fwd, int layer, ReadOnlySpan<int> deps, int index, int mb, int repeat = 1)
    {
        B.Phase = OpPhase.BackwardData;
        var dx = B.AddRepeatedMatmul(kind, g, new(fwd.M, fwd.N, fwd.K, fwd.Batch), repeat, layer, deps, index, mb);
        var dw = new MatmulShape(fwd.K, fwd.M, fwd.N, fwd.Batch);
        // The attention products have no weights: their second GEMM (dK, dV) belongs to the input gradient and stays in B.
        if (DeferredWeightGradients is { } deferred && kind.Category() != OpCategory.Attention)
        {
            // Zero-bubble B/W split (Qi et al. 2023 §2): dW needs only X and dY, both available now; it is issued later.
            deferred.Add(new DeferredWeightGradient(kind, g, dw, layer, deps.ToArray(), index, mb, repeat));
            return dx;
        }
        B.Phase = OpPhase.BackwardWeight;
        B.AddRepeatedMatmul(kind, g, dw, repeat, layer, deps, index, mb);
        B.Phase = OpPhase.BackwardData;
        return dx;
    }

    /// <summary>
    /// Issues deferred weight-gradient GEMMs (a zero-bubble W pass) in the order their B pass produced them; returns
    /// the last op issued on each GPU for each layer, so gradient synchronisation can wait for it.
    /// </summary>
    public Dictionary<(int Gpu, int Layer), int> EmitWeightGradients(IReadOnlyList<DeferredWeightGradient> deferred)
    {
        B.Phase = OpPhase.BackwardWeight;
        var done = new Dictionary<(int Gpu, int Layer), int>();
        foreach (var w in deferred)
            done[(w.Gpu, w.Layer)] = B.AddRepeatedMatmul(w.Kind, w.Gpu, w.Shape, w.Repeat, w.Layer, w.Deps, w.Index, w.Microbatch);
        B.Phase = OpPhase.BackwardData;
        return done;
    }

    // ----- linear layers under a precision recipe -------------------------------------------------------------------

    /// <summary>
    /// Quantizes an activation of <paramref name="elements"/> before low-precision GEMMs (with the transposed copy the
    /// weight gradient needs in training); returns the op the GEMMs wait for (<paramref name="dep"/> when no recipe quantizes).
    /// </summary>
    public int QuantizeInput(int g, long elements, int layer, int dep, int mb, int repeat = 1)
    {
        if (Quantization is null) return dep;
        return B.AddMemoryBound(OpKind.Quantize, g, Quantization.QuantizeBytes(elements, Training), layer, Deps(dep), microbatch: mb, repeat: repeat);
    }

    /// <summary>
    /// A linear layer's forward GEMM. Under a quantizing recipe its weight is cast once per step, in the first
    /// microbatch's forward (Transformer Engine caches the cast weights over microbatches, is_first_microbatch).
    /// </summary>
    public int LinearForward(OpKind kind, int g, MatmulShape shape, int layer, ReadOnlySpan<int> deps, int index, int mb, BlockPass pass, int repeat = 1)
    {
        if (Quantization is null || pass != BlockPass.Forward || !FirstMicrobatchOfCopy(mb)) return B.AddRepeatedMatmul(kind, g, shape, repeat, layer, deps, index, mb);
        var cast = B.AddMemoryBound(OpKind.Quantize, g, Quantization.QuantizeBytes(shape.K * shape.N, Training), layer, [], index, mb, repeat);
        return B.AddRepeatedMatmul(kind, g, shape, repeat, layer, [.. deps, cast], index, mb);
    }

    /// <summary>
    /// The first microbatch a weight copy sees: 0, and under DualPipe in training also m / 2, the first microbatch
    /// entering from the other end (it runs on the second parameter copy, cast on its own).
    /// </summary>
    private bool FirstMicrobatchOfCopy(int mb) =>
        mb == 0 || (Training && St.Schedule == PipelineSchedule.DualPipe && mb == St.Microbatches / 2);

    /// <summary>A linear layer's dX and dW; under a quantizing recipe the output gradient is quantized first (row- and column-wise copies).</summary>
    public int LinearBackward(OpKind kind, int g, MatmulShape fwd, int layer, ReadOnlySpan<int> deps, int index, int mb, int repeat = 1)
    {
        if (Quantization is null) return Backward(kind, g, fwd, layer, deps, index, mb, repeat);
        B.Phase = OpPhase.BackwardData;
        var q = B.AddMemoryBound(OpKind.Quantize, g, Quantization.QuantizeBytes(fwd.Batch * fwd.M * fwd.N, true), layer, deps, microbatch: mb, repeat: repeat);
        return Backward(kind, g, fwd, layer, [q], index, mb, repeat);
    }

    /// <summary>
    /// Megatron sequence parallelism is in effect (strategy.sequenceParallel with TP > 1; Megatron-LM turns it off at
    /// TP = 1): norms, dropout and residual adds run on 1/TP of the tokens, TP all-reduces become reduce-scatters and
    /// all-gathers restore the tokens before column-parallel GEMMs (Korthikanti et al. 2022 §4.2.2).
    /// </summary>
    public bool SequenceParallel => St.SequenceParallel && St.TP > 1;

    /// <summary>
    /// The MoE block runs Megatron-Core's all-to-all token dispatcher on each rank's own tokens (sequence parallelism, or
    /// MoE parallel folding with ETP != TP): router and permutation on the rank's T/TP tokens (T at TP = 1), all-to-all over
    /// the EP group, all-gather over the ETP group before the experts and reduce-scatter after, all-to-all back
    /// (MoEAlltoAllTokenDispatcher.token_permutation / token_unpermutation). Otherwise today's: every TP rank routes
    /// all T tokens, experts TP-sharded, outputs all-reduced over TP.
    /// </summary>
    public bool ShardedDispatch => St.ETP != St.TP || SequenceParallel;

    /// <summary>Tokens each rank routes and dispatches: T / TP under sequence parallelism, else T.</summary>
    public long MoeSourceTokensPerRank => SequenceParallel ? TokensPerRank / St.TP : TokensPerRank;

    /// <summary>One rank's [routed-from tokens, H] activation in bytes (the MoE block's input and output on this rank).</summary>
    public long MoeSourceActivationBytes => MoeSourceTokensPerRank * H * E;

    /// <summary>Bytes of an elementwise pass over the block's [tokens, H] activations: 1/TP of them under sequence parallelism.</summary>
    public long SequenceShard(long bytes) => SequenceParallel ? bytes / St.TP : bytes;

    /// <summary>Whether selective recomputation (<see cref="StrategySpec.RecomputeModules"/>) lists <paramref name="module"/> in a training run.</summary>
    public bool Recomputes(RecomputeModules module) => Training && (St.RecomputeModules & module) != 0;

    /// <summary>
    /// Runs <paramref name="emit"/> with the builder in the recompute phase, then restores the phase: the operations a
    /// selectively recomputed module emits inside a backward.
    /// </summary>
    public T InRecompute<T>(Func<T> emit)
    {
        var phase = B.Phase;
        B.Phase = OpPhase.Recompute;
        try { return emit(); }
        finally { B.Phase = phase; }
    }

    /// <inheritdoc cref="InRecompute{T}(Func{T})"/>
    public void InRecompute(Action emit) => InRecompute(() => { emit(); return 0; });

    /// <summary>
    /// Selective recomputation of a pre-norm (<c>layernorm</c>): at the start of its block's backward, the norm over the
    /// block's input runs again (reads and writes [T, H]; 1/TP of the tokens under sequence parallelism), because
    /// the GEMMs' weight gradients need its output, which the forward did not keep. Nothing unless listed.
    /// </summary>
    public void RecomputeNorm(LayerSite site, int[] last)
    {
        if (!Recomputes(RecomputeModules.Layernorm)) return;
        InRecompute(() => Elementwise(site, SequenceShard(2 * ActivationBytes), 0, last));
    }

    /// <summary>Per local rank: an elementwise pass of <paramref name="bytes"/> after last[li] (norm, residual, ...).</summary>
    public void Elementwise(LayerSite site, long bytes, int role, int[] last)
    {
        for (var li = 0; li < site.Gpus.Length; li++)
            if (!SkipFoldedRank(site.Gpus, li, last))
                last[li] = B.AddElementwise(site.Gpus[li], bytes, site.Layer, Deps(last[li]), index: role, microbatch: site.Microbatch);
    }

    /// <summary>
    /// A token mixer's (attention, Mamba) pre-norm, first part: under sequence parallelism the norm on this rank's 1/TP
    /// of the tokens and the all-gather restoring all of them (last[li] is then the gather); without it nothing here,
    /// the norm is per rank in <see cref="PreNorm"/>.
    /// </summary>
    public void PreNormGather(LayerSite site, int[] last)
    {
        if (!SequenceParallel) return;
        Elementwise(site, SequenceShard(2 * ActivationBytes), 0, last);
        TensorGroupCollective(site.Gpus, OpKind.SequenceAllGather, ActivationBytes, site.Layer, site.Microbatch, last);
    }

    /// <summary>The operation local rank <paramref name="li"/>'s mixer input waits for: the gather under sequence parallelism, else its pre-norm.</summary>
    public int PreNorm(LayerSite site, int li, int[] last) =>
        SequenceParallel ? last[li] : B.AddElementwise(site.Gpus[li], 2 * ActivationBytes, site.Layer, Deps(last[li]), index: 0, microbatch: site.Microbatch);

    /// <summary>
    /// A token mixer's backward tail: the conjugate of the forward's tensor-parallel collective (reduce-scatter to 1/TP
    /// of the tokens under sequence parallelism, else the all-reduce of the attention groups), then the pre-norm's backward.
    /// </summary>
    public void MixerBackwardTail(LayerSite site, int[] last)
    {
        if (SequenceParallel) TensorGroupCollective(site.Gpus, OpKind.SequenceReduceScatter, ActivationBytes, site.Layer, site.Microbatch, last);
        else AllReduceAttentionGroups(site.Gpus, OpKind.AttentionAllReduce, ActivationBytes, site.Layer, site.Microbatch, last);
        Elementwise(site, SequenceShard(2 * ActivationBytes), 0, last);
    }
}

/// <summary>A weight-gradient GEMM held back from a zero-bubble B pass: everything <see cref="DagBuilder.AddMatmul"/> needs.</summary>
internal sealed record DeferredWeightGradient(OpKind Kind, int Gpu, MatmulShape Shape, int Layer, int[] Deps, int Index, int Microbatch, int Repeat = 1);
