using System.Text.Json;

namespace MoeNotebooks.Config;

/// <summary>
/// Megatron-Core's selective activation recomputation (<c>--recompute-granularity selective --recompute-modules ...</c>,
/// megatron/core/transformer/transformer_config.py <c>recompute_modules</c>): the listed submodules drop their saved
/// activations in the forward and run their forward again inside the backward, where the backward first needs them.
/// Each flag is named as Megatron's module string (<see cref="MegatronName"/>).
/// <list type="bullet">
/// <item><c>core_attn</c>: the attention core (scores, softmax, values).</item>
/// <item><c>mla_up_proj</c>: multi-head latent attention's up-projections (q_up, kv_up).</item>
/// <item><c>layernorm</c>: the input and pre-MLP norms (and a Mamba layer's norm).</item>
/// <item><c>moe_act</c>: the routed experts' activation (GLU).</item>
/// <item><c>shared_experts</c>: the shared experts' MLP.</item>
/// <item><c>mlp</c>: a dense layer's MLP.</item>
/// <item><c>moe</c>: the whole MoE layer: router, permutation, dispatch and combine, experts.</item>
/// </list>
/// A module a layer does not have recomputes nothing there (Megatron's list applies per submodule).
/// </summary>
[Flags]
public enum RecomputeModules
{
    None = 0,
    CoreAttn = 1,
    MlaUpProj = 2,
    Layernorm = 4,
    MoeAct = 8,
    SharedExperts = 16,
    Mlp = 32,
    Moe = 64,
}

public static class RecomputeModulesText
{
    private static readonly (RecomputeModules Flag, string Name)[] Names =
    [
        (RecomputeModules.CoreAttn, "core_attn"), (RecomputeModules.MlaUpProj, "mla_up_proj"), (RecomputeModules.Layernorm, "layernorm"),
        (RecomputeModules.MoeAct, "moe_act"), (RecomputeModules.SharedExperts, "shared_experts"), (RecomputeModules.Mlp, "mlp"), (RecomputeModules.Moe, "moe"),
    ];

    /// <summary>Megatron's module strings, comma-separated (for messages).</summary>
    public static string Valid { get; } = string.Join(", ", Names.Select(n => n.Name));

    /// <summary>Every module: a value with other bits set is not a set of Megatron's modules.</summary>
    public static RecomputeModules All { get; } = Names.Aggregate(RecomputeModules.None, (all, n) => all | n.Flag);

    /// <summary>Megatron's module strings of <paramref name="modules"/>, in Megatron's documentation order.</summary>
    public static IReadOnlyList<string> MegatronNames(this RecomputeModules modules) =>
        Names.Where(n => (modules & n.Flag) != 0).Select(n => n.Name).ToArray();

    /// <summary>The modules as Megatron's command line lists them (<c>layernorm moe_act</c>), or <c>none</c>.</summary>
    public static string ToText(this RecomputeModules modules) => modules == RecomputeModules.None ? "none" : string.Join(" ", modules.MegatronNames());

    /// <summary>
    /// One set written on a command line: <c>none</c>, or module strings joined by <c>+</c> or <c>,</c>
    /// (<c>layernorm+moe_act</c>); errors name <paramref name="field"/>.
    /// </summary>
    public static RecomputeModules ParseSet(string field, string text) =>
        text.Trim() == "none" ? RecomputeModules.None : Parse(field, text.Split(['+', ',']).Select(n => n.Trim()));

    /// <summary>One Megatron module string; a clear error naming <paramref name="field"/> and the valid names otherwise.</summary>
    public static RecomputeModules Parse(string field, string name, string? source = null)
    {
        foreach (var (flag, n) in Names)
            if (string.Equals(n, name, StringComparison.Ordinal)) return flag;
        throw new ConfigException(field, JsonObjectReader.Quote(name), $"is not a recompute module; valid: {Valid}", source);
    }

    /// <summary>Module strings (repeats allowed, as Megatron's list) to flags.</summary>
    public static RecomputeModules Parse(string field, IEnumerable<string> names, string? source = null)
    {
        var modules = RecomputeModules.None;
        var i = 0;
        foreach (var name in names) modules |= Parse($"{field}[{i++}]", name, source);
        return modules;
    }

    /// <summary>A JSON array of module strings (<c>"recomputeModules": ["layernorm", "moe_act"]</c>).</summary>
    public static RecomputeModules Read(JsonObjectReader r, string key)
    {
        if (r.Element(key) is not { } e) return RecomputeModules.None;
        var field = r.Child(key);
        if (e.ValueKind != JsonValueKind.Array)
            throw new ConfigException(field, JsonObjectReader.Raw(e), $"must be an array of module names ({Valid})", r.Source);
        var names = new List<string>();
        var i = 0;
        foreach (var item in e.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.String)
                throw new ConfigException($"{field}[{i}]", JsonObjectReader.Raw(item), $"must be a module name ({Valid})", r.Source);
            if (i >= Names.Length * 4)
                throw new ConfigException(field, $"{i + 1} or more entries", $"must list at most {Names.Length * 4} names (there are {Names.Length} modules)", r.Source);
            names.Add(item.GetString()!);
            i++;
        }
        return Parse(field, names, r.Source);
    }
}
