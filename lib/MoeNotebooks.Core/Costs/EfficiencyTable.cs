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
    /// FLOPs at peak that take as long as a GEMM of <paramref name="flops"/>: flops / efficiency(flops), but never less
    /// than flops / efficiency at the top of any lower step, so that time = this / peak never decreases as a GEMM grows.
    /// A bare step function prices a GEMM just above a step (1e9 FLOPs at 0.5) at half the time of one just below it
    /// (0.999e9 at 0.25), so adding tokens could shorten a training step; with the floor a GEMM stays at least as slow
    /// as the largest GEMM of a lower step until its own step's efficiency catches up (the least non-decreasing time
    /// above the step model). Found by the robustness property "more tokens never lower the total".
    /// Computed as (flops / efficiency) and (minFlops / previous efficiency) so that both sides round the same way.
    /// </summary>
    public double PeakEquivalentFlops(double flops)
    {
        var floor = 0.0;
        var eff = Matmul[0].Efficiency;
        for (var i = 0; i < Matmul.Count && flops >= Matmul[i].MinFlops; i++)
        {
            if (i > 0) floor = Math.Max(floor, Matmul[i].MinFlops / Matmul[i - 1].Efficiency);
            eff = Matmul[i].Efficiency;
        }
        return Math.Max(flops / eff, floor);
    }

    public EfficiencyTable Validated(string path = "costModel.efficiency", string? source = null)
    {
        Validate.NotEmpty($"{path}.name", Name);
        if (Matmul.Count == 0) throw new ConfigException($"{path}.matmul", "[]", "must list at least one {minFlops, efficiency} step", source);
        for (var i = 0; i < Matmul.Count; i++)
        {
            Validate.NonNegative($"{path}.matmul[{i}].minFlops", Matmul[i].MinFlops);
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

    private static readonly Lazy<IReadOnlyDictionary<string, EfficiencyTable>> Catalog = new(() =>
    {
        var asm = typeof(EfficiencyTable).Assembly;
        var map = new Dictionary<string, EfficiencyTable>(StringComparer.OrdinalIgnoreCase);
        foreach (var res in asm.GetManifestResourceNames().Where(n => n.StartsWith("efficiency/", StringComparison.Ordinal)))
        {
            using var reader = new StreamReader(asm.GetManifestResourceStream(res)!);
            var source = "data/" + res;
            using var doc = JsonObjectReader.Parse(reader.ReadToEnd(), source);
            var table = Read(new JsonObjectReader(doc.RootElement, "", source));
            map[table.Name] = table;
        }
        return map;
    });

    /// <summary>An efficiency table shipped in <c>data/efficiency/</c> by name.</summary>
    public static EfficiencyTable Get(string name, string field = "costModel.efficiency", string? source = null) =>
        Catalog.Value.TryGetValue(name, out var t) ? t
            : throw new ConfigException(field, $"\"{name}\"", $"is not a known efficiency table; known: {string.Join(", ", Catalog.Value.Keys.Order())}", source);
}
