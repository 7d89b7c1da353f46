using MoeNotebooks.Costs;

namespace MoeNotebooks.Config;

public enum CostModelKind
{
    /// <summary>max(2mkn / peak, (mk + kn + mn) x bytes / HBM bandwidth); communication latency + bytes / bandwidth.</summary>
    RooflineIdeal,

    /// <summary>Roofline with efficiencies read from an <see cref="EfficiencyTable"/>.</summary>
    RooflineEfficiency,
}

/// <summary>Which cost model prices a scenario's DAG.</summary>
public sealed record CostModelSpec(CostModelKind Kind, EfficiencyTable? Efficiency = null)
{
    public static CostModelSpec Ideal { get; } = new(CostModelKind.RooflineIdeal);

    public CostModel Create(HardwareSpec hardware) => Kind switch
    {
        CostModelKind.RooflineIdeal => CostModel.RooflineIdeal(hardware),
        _ => CostModel.RooflineEfficiency(hardware, Efficiency ?? throw new ConfigException("costModel.efficiency", null, "is required for kind \"roofline-efficiency\"")),
    };

    /// <summary><c>"roofline-ideal"</c>, or <c>{"kind": "roofline-efficiency", "efficiency": "typical-hopper" | {...table...}}</c>.</summary>
    public static CostModelSpec Read(System.Text.Json.JsonElement element, string path, string? source)
    {
        if (element.ValueKind == System.Text.Json.JsonValueKind.String)
            return Checked(new CostModelSpec(JsonObjectReader.ParseEnum<CostModelKind>(path, element.GetString()!, source)), path, source);
        var r = new JsonObjectReader(element, path, source);
        var kind = JsonObjectReader.ParseEnum<CostModelKind>(r.Child("kind"), r.String("kind"), source);
        EfficiencyTable? table = null;
        if (r.Element("efficiency") is { } eff)
        {
            table = eff.ValueKind == System.Text.Json.JsonValueKind.String
                ? EfficiencyTable.Get(eff.GetString()!, r.Child("efficiency"), source)
                : EfficiencyTable.Read(new JsonObjectReader(eff, r.Child("efficiency"), source));
        }
        r.Finish();
        return Checked(new CostModelSpec(kind, table), path, source);
    }

    private static CostModelSpec Checked(CostModelSpec spec, string path, string? source)
    {
        if (spec.Kind == CostModelKind.RooflineEfficiency && spec.Efficiency is null)
            throw new ConfigException($"{path}.efficiency", null, "is required for kind \"roofline-efficiency\" (a table name such as \"typical-hopper\" or an inline table)", source);
        if (spec.Kind == CostModelKind.RooflineIdeal && spec.Efficiency is not null)
            throw new ConfigException($"{path}.efficiency", $"\"{spec.Efficiency.Name}\"", "applies only to kind \"roofline-efficiency\"", source);
        return spec;
    }

    public override string ToString() => Efficiency is null ? JsonObjectReader.Kebab(Kind.ToString()) : $"{JsonObjectReader.Kebab(Kind.ToString())}({Efficiency.Name})";
}
