namespace MoeNotebooks.Costs;

public static class CostModelWarnings
{
    /// <summary>Warnings the cost model's parts collected while pricing (extrapolated shapes, datasheet fallbacks); empty for models that never warn.</summary>
    public static IReadOnlyList<string> Warnings(this CostModel model)
    {
        var list = new List<string>();
        if (model.Compute is CalibratedCompute c) list.AddRange(c.Warnings);
        if (model.Communication is CalibratedCommunication m) list.AddRange(m.Warnings);
        return list;
    }
}
