using System.Globalization;
using MoeNotebooks.Config;

namespace MoeNotebooks.Costs;

/// <summary>One step of a size-dependent efficiency: GEMMs of at least <see cref="MinFlops"/> reach <see cref="Efficiency"/> of peak.</summary>
public sealed record EfficiencyStep(double MinFlops, double Efficiency);

/// <summary>
/// Fractions of datasheet peaks that kernels reach, kept as data (<c>data/efficiency/*.json</c>) rather than
/// constants in code: a step function of GEMM FLOPs for compute, one factor for HBM bandwidth.
/// </summary>
public sealed record EfficiencyTable(string Name, IReadOnlyList<EfficiencyStep> Matmul, double Memory, string Source)
{
    /// <summary>Everything at 100% of peak: the ideal roofline.</summary>
    public static EfficiencyTable Ideal { get; } = new("ideal", [new EfficiencyStep(0, 1.0)], 1.0, "ideal roofline: datasheet peaks");

    public double MatmulEfficiency(double flops)
    {
        var eff = Matmul[0].Efficiency;
        foreach (var step in Matmul)
        {
            if (flops >= step.MinFlops) eff = step.Efficiency;
            else break;
        }
        return eff;
    }

    /// <summary>
    /// FLOPs at peak that take as long as a GEMM of <paramref name="flops"/>: flops / efficiency(flops), but never more
    /// than minFlops / efficiency of any higher step, so that time = this / peak never decreases as a GEMM grows.
    /// A bare step function prices a GEMM just below a step (0.999e9 FLOPs at 0.25) at twice the time of one at the
    /// step (1e9 at 0.5), so adding tokens could shorten a training step. The cap is the greatest non-decreasing time
    /// below the step model: every GEMM at or above a step keeps the table's efficiency exactly (the table's statement
    /// "GEMMs of at least minFlops reach efficiency" holds as written); only GEMMs just below a step, where the step model
    /// would make them slower than a bigger GEMM, are priced like the step (from 0.5e9 to 1e9 FLOPs in typical-hopper).
    /// Found by the robustness property "more tokens never lower the total". Both sides are computed as
    /// x / efficiency so that they round alike.
    /// </summary>
    public double PeakEquivalentFlops(double flops)
    {
        var eff = Matmul[0].Efficiency;
        var cap = double.PositiveInfinity;
        foreach (var step in Matmul)
        {
            if (flops >= step.MinFlops) eff = step.Efficiency;
            else cap = Math.Min(cap, step.MinFlops / step.Efficiency);
        }
        return Math.Min(flops / eff, cap);
    }

    public EfficiencyTable Validated(string path = "costModel.efficiency", string? source = null)
    {
        Validate.NotEmpty($"{path}.name", Name);
        if (Matmul.Count == 0) throw new ConfigException($"{path}.matmul", "[]", "must list at least one {minFlops, efficiency} step", source);
        for (var i = 0; i < Matmul.Count; i++)
        {
            Validate.NonNegative($"{path}.matmul[{i}].minFlops", Matmul[i].MinFlops);
            Validate.Within($"{path}.matmul[{i}].minFlops", Matmul[i].MinFlops, Bounds.Flops, source);
            Validate.InRange($"{path}.matmul[{i}].efficiency", Matmul[i].Efficiency, 1e-6, 1.0);
            if (i > 0 && Matmul[i].MinFlops <= Matmul[i - 1].MinFlops)
                throw new ConfigException($"{path}.matmul[{i}].minFlops", Matmul[i].MinFlops.ToString("R", CultureInfo.InvariantCulture),
                    $"must be greater than the previous step's {Matmul[i - 1].MinFlops.ToString("R", CultureInfo.InvariantCulture)} (steps ascend)", source);
        }
        if (Matmul[0].MinFlops != 0)
            throw new ConfigException($"{path}.matmul[0].minFlops", Matmul[0].MinFlops.ToString("R", CultureInfo.InvariantCulture), "must be 0 so every GEMM has an efficiency", source);
        Validate.InRange($"{path}.memory", Memory, 1e-6, 1.0);
        return this;
    }

    public static EfficiencyTable Read(JsonObjectReader r)
    {
        var steps = new List<EfficiencyStep>();
        if (r.Element("matmul") is not { ValueKind: System.Text.Json.JsonValueKind.Array } array)
            throw new ConfigException(r.Child("matmul"), null, "is required: an array of {\"minFlops\": number, \"efficiency\": 0..1}", r.Source);
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            var sr = new JsonObjectReader(item, $"{r.Child("matmul")}[{i++}]", r.Source);
            steps.Add(new EfficiencyStep(sr.Double("minFlops"), sr.Double("efficiency")));
            sr.Finish();
        }
        var t = new EfficiencyTable(r.String("name"), steps, r.Double("memory"), r.OptionalString("source") ?? "");
        r.Finish();
        return t.Validated(r.Path, r.Source);
    }

    private static readonly Lazy<IReadOnlyDictionary<string, EfficiencyTable>> Catalog = new(() => EmbeddedCatalog.Load("efficiency", Read, t => t.Name));

    /// <summary>An efficiency table shipped in <c>data/efficiency/</c> by name.</summary>
    public static EfficiencyTable Get(string name, string field = "costModel.efficiency", string? source = null) =>
        Catalog.Value.TryGetValue(name, out var t) ? t
            : throw new ConfigException(field, $"\"{name}\"", $"is not a known efficiency table; known: {string.Join(", ", Catalog.Value.Keys.Order())}", source);
}
