using MoeNotebooks.Analysis;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Config;

/// <summary>One question: a model on some hardware under a strategy, priced by a cost model.</summary>
public sealed record Scenario(string Name, ModelSpec Model, HardwareSpec Hardware, StrategySpec Strategy, CostModelSpec CostModel, string Description = "")
{
    /// <summary>Checks that the parts fit together (GPU count, divisibility); messages name the field.</summary>
    public Scenario Validated(string? source = null)
    {
        Validate.NotEmpty("name", Name);
        Model.Validated(source: source);
        Hardware.Validated(source: source);
        Strategy.Validated(source: source);
        Strategy.CheckFits(Model, Hardware.GpuCount, source);
        if (Strategy.Derivation == Derivation.Corrected)
            Model.CheckTensorParallel(Strategy.TP, Strategy.Attention == AttentionPlacement.DataParallel ? Strategy.TP : Strategy.TP * Strategy.EP, source);
        // Megatron's --moe-enable-deepep: DeepEP's kernels carry the all-to-all; the cost model prices them (their
        // links and, for the normal kernels, the SMs they take from compute).
        if (Strategy.MoeAllToAllOverlap == MoeAllToAllOverlap.DeepEp && CostModel.AllToAll is not (AllToAllImplementation.DeepEpNormal or AllToAllImplementation.DeepEpLowLatency))
            throw new ConfigException("costModel.alltoall", $"\"{JsonObjectReader.Kebab(CostModel.AllToAll.ToString())}\"",
                "must be \"deep-ep-normal\" (Megatron's training path) or \"deep-ep-low-latency\" when strategy.moeAllToAllOverlap is \"deep-ep\" (DeepEP's kernels carry the all-to-all); e.g. \"costModel\": {\"kind\": \"roofline-ideal\", \"alltoall\": \"deep-ep-normal\"}", source);
        Hardware.Gpu.PeakFor(Model.Dtype, "hardware.gpu.peakFlopsPerSecond");
        if (Model.Precision is { } recipe && !Hardware.Gpu.PeakFlopsPerSecond.ContainsKey(recipe.GemmDtype))
            throw new ConfigException("model.precision", $"\"{recipe.Name}\"",
                $"prices GEMMs at the GPU's \"{recipe.GemmDtype}\" peak, which {Hardware.Gpu.Name} does not list (it lists {string.Join(", ", Hardware.Gpu.PeakFlopsPerSecond.Keys)}); choose a recipe its tensor cores run, or hardware with {recipe.GemmDtype}", source);
        return this;
    }

    public static Scenario Load(string path)
    {
        return Parse(JsonObjectReader.ReadFile(path, "scenario"), path);
    }

    public static Scenario Parse(string json, string? source = null)
    {
        // Range checks inside the records (Validate.*) throw without the file name; attach it here so that every
        // error from a file says which file.
        try { return ParseUnattributed(json, source); }
        catch (ConfigException e) when (e.Source is null && source is not null) { throw e.WithSource(source); }
    }

    private static Scenario ParseUnattributed(string json, string? source)
    {
        using var doc = JsonObjectReader.Parse(json, source);
        var r = new JsonObjectReader(doc.RootElement, "", source);
        var name = r.OptionalString("name") ?? (source is null ? "scenario" : Path.GetFileNameWithoutExtension(source));
        var description = r.OptionalString("description") ?? "";
        var model = (ModelSpec)ReadSection(r, 0, source);
        var hardware = (HardwareSpec)ReadSection(r, 1, source);
        var strategy = (StrategySpec)ReadSection(r, 2, source);
        var cost = (CostModelSpec)ReadSection(r, 3, source);
        r.Finish();
        return new Scenario(name, model, hardware, strategy, cost, description).Validated(source);
    }

    /// <summary>The four sections of a scenario document, in the order <see cref="Parse"/> reads them.</summary>
    internal static readonly string[] Sections = ["model", "hardware", "strategy", "costModel"];

    /// <summary>
    /// Section <paramref name="section"/> (an index into <see cref="Sections"/>) of the document <paramref name="r"/>
    /// reads, as <see cref="Parse"/> reads it (a sweep reads its points' sections one by one through here too); a
    /// missing cost model is the ideal roofline.
    /// </summary>
    internal static object ReadSection(JsonObjectReader r, int section, string? source) => section switch
    {
        0 => ModelSpec.Read(r.Object("model")),
        1 => HardwareSpec.Read(r.Object("hardware")),
        2 => StrategySpec.Read(r.Object("strategy")),
        3 => r.Element("costModel") is { } c ? CostModelSpec.Read(c, "costModel", source) : CostModelSpec.Ideal,
        _ => throw new ArgumentOutOfRangeException(nameof(section), section, "a scenario has four sections"),
    };

    /// <summary>The same scenario on a catalog preset's GPUs, keeping the GPU count.</summary>
    public Scenario OnHardware(string preset) =>
        this with { Hardware = HardwareCatalog.Get(preset).WithGpus(Hardware.GpuCount) };

    /// <summary>The same scenario priced by a named cost model (<see cref="CostModelSpec.Named"/>).</summary>
    public Scenario WithCostModel(string name) => this with { CostModel = CostModelSpec.Named(name) };

    /// <summary>The operator DAG: whole by default (the oracle), or folded onto one representative per symmetry class.</summary>
    public OperatorDag BuildDag(DagFolding folding = DagFolding.None) => Strategy.BuildDag(Model, folding);

    public CostModel CreateCostModel() => CostModel.Create(Hardware);

    /// <summary>
    /// The DAG to price with <paramref name="cost"/>: folded when <paramref name="folding"/> asks for it and the cost
    /// model keeps the replicas identical (<see cref="Costs.CostModel.PricesFoldSymmetrically"/>), otherwise whole.
    /// </summary>
    public OperatorDag BuildDagFor(CostModel cost, DagFolding folding = DagFolding.Symmetric) => BuildDagFor(cost, folding, BuildDag);

    /// <summary>
    /// The same choice, with the DAGs taken from <paramref name="build"/> (a sweep's DAGs by structure) and the check
    /// from <paramref name="keepsFold"/> (<c>cost.PricesFoldSymmetrically</c>, or a sweep's copy kept per structure).
    /// </summary>
    internal OperatorDag BuildDagFor(CostModel cost, DagFolding folding, Func<DagFolding, OperatorDag> build, Func<OperatorDag, bool>? keepsFold = null)
    {
        keepsFold ??= cost.PricesFoldSymmetrically;
        var dag = build(folding);
        if (!dag.IsFolded || keepsFold(dag)) return dag;
        // Ranks folded but not priced symmetrically: fold the replicas only, else build whole.
        if (dag.Symmetries is not null && (dag = build(DagFolding.Replicas)).IsFolded && keepsFold(dag)) return dag;
        return build(DagFolding.None);
    }

    /// <summary>
    /// Builds, prices and schedules the DAG and derives the formula. By default the DAG is folded (data-parallel
    /// replicas built once, <see cref="DagFolding.Symmetric"/>) and a long run of identical microbatches is extrapolated
    /// from a few built ones (<see cref="DagFolding.Periodic"/>, <see cref="CriticalPathResult.Extrapolation"/>): the
    /// total, critical-path seconds by category and breakdowns are the whole run's; <see cref="DagFolding.None"/> builds every GPU.
    /// <paramref name="concurrently"/>: one evaluation on a machine with a core to spare, where a run whose whole DAG costs
    /// little more than the extrapolation's attempts is built whole on a second thread beside them
    /// (<see cref="MicrobatchPeriodicity.BuildWholeAlongside"/>); not for code that already evaluates scenarios in
    /// parallel. The answer is the same either way: the whole DAG is used only when the attempts find no repetition.
    /// </summary>
    public Evaluation Evaluate(DagFolding folding = DagFolding.Periodic, bool concurrently = false)
    {
        Validated();
        var cost = CreateCostModel();
        // Two cores: when building the run whole costs little more than the extrapolation's first attempt, it is built
        // beside the attempts, and used only if they find no repetition (the answer does not depend on which is faster).
        var stop = new CancellationTokenSource();
        var whole = concurrently && folding == DagFolding.Periodic && MicrobatchPeriodicity.BuildWholeAlongside(this) ? Task.Run(() =>
        {
            CorrectedDerivation.Cancellation = stop.Token;
            try
            {
                var d = BuildDagFor(cost, DagFolding.Symmetric);
                return (Dag: d, Result: d.CriticalPath(cost));
            }
            finally { CorrectedDerivation.Cancellation = default; }
        }) : null;
        // Many identical microbatches: build enough of them to see the schedule repeat and extrapolate the rest
        // exactly (null when the strategy, the cost model or the built DAG does not allow it: then build it all).
        var result = folding == DagFolding.Periodic ? MicrobatchPeriodicity.TryEvaluate(this, cost, DagFolding.Symmetric) : null;
        if (result is not null && whole is not null)
        {
            stop.Cancel();
            whole.ContinueWith(t => t.Exception, TaskContinuationOptions.OnlyOnFaulted);   // observed: a dropped build's end
        }
        OperatorDag dag;
        try
        {
            if (result is null && whole is not null) (dag, result) = whole.GetAwaiter().GetResult();
            else dag = result?.Dag ?? BuildDagFor(cost, folding == DagFolding.Periodic ? DagFolding.Symmetric : folding);
        }
        catch (ConfigException e) when (folding == DagFolding.Periodic && MicrobatchPeriodicity.LastRefusal is { } why)
        {
            // Over the size guard whole: say why the extrapolation, which would have built less, did not apply.
            throw new ConfigException(e.Field, e.Value, $"{e.Requirement}; not extrapolated over microbatches: {why}", e.Source);
        }
        result ??= dag.CriticalPath(cost);
        // Bounded inputs price to finite times; if some combination still overflows, refuse it here rather than
        // hand an infinite total to a writer, a chart or a comparison.
        if (!double.IsFinite(result.TotalSeconds))
            throw new ConfigException("scenario", Name, "prices to a non-finite time (a bandwidth, peak or latency at the edge of its range); use physically sensible hardware numbers");
        return new Evaluation(this, dag, cost, result, result.Extrapolation?.Formula ?? RuntimeFormula.FromCriticalPath(result), MemoryModel.Estimate(Model, Strategy, Hardware));
    }

    /// <summary>The memory verdict alone (no DAG is built).</summary>
    public MemoryReport Memory() => MemoryModel.Estimate(Model, Strategy, Hardware);
}

/// <summary>Everything an evaluation produced.</summary>
public sealed record Evaluation(Scenario Scenario, OperatorDag Dag, CostModel Cost, CriticalPathResult Result, RuntimeFormula Formula, MemoryReport Memory)
{
    public double TotalSeconds => Result.TotalSeconds;

    /// <summary>Where the routed tokens go (corrected derivation; null for a dense model or the seed derivation).</summary>
    public RoutingOutcome? Routing => Scenario.Strategy.Derivation == Derivation.Corrected ? RoutingOutcome.Of(Scenario.Model, Scenario.Strategy) : null;

    /// <summary>Every distinct collective and send, with the algorithm chosen and the bus bandwidth reached.</summary>
    public IReadOnlyList<CollectiveUse> Collectives => Result.Extrapolation?.Collectives ?? CollectiveReport.Of(Dag, Cost);

    /// <summary>
    /// How much the total drops if each operation kind or link class got <paramref name="speedup"/> faster. The what-if
    /// re-schedules every operation, so an evaluation that extrapolated its microbatches is evaluated again with every
    /// microbatch built (<see cref="DagFolding.Symmetric"/>: the same total, exactly, and slower).
    /// </summary>
    public IReadOnlyList<SensitivityRow> Sensitivity(double speedup = 0.10) => Result.Extrapolation is null
        ? Analysis.Sensitivity.Analyze(Result, Scenario.Hardware, speedup)
        : Scenario.Evaluate(DagFolding.Symmetric).Sensitivity(speedup);
}
