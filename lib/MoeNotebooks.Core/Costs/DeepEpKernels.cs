using MoeNotebooks.Config;

namespace MoeNotebooks.Costs;

/// <summary>
/// The routing behind an expert-parallel dispatch or combine, which the DAG carries beside its bytes
/// (<see cref="Dag.OperatorDag.RoutedTopK"/>, <see cref="Dag.OperatorDag.ExpertsPerRank"/>): each token goes to
/// <see cref="TopK"/> experts, each rank of the EP group holds <see cref="ExpertsPerRank"/>. The DAG's all-to-all bytes
/// count every token-expert pair (Megatron-Core's dispatcher permutes T x topK rows); a kernel that sends a token once
/// per destination node or rank (DeepEP's normal kernels) moves fewer.
/// </summary>
public readonly record struct TokenRouting(int TopK, int ExpertsPerRank)
{
    /// <summary>
    /// The probability that a token's <paramref name="topK"/> distinct experts, drawn uniformly from
    /// <paramref name="experts"/>, include at least one of <paramref name="held"/> given experts:
    /// 1 - C(E - m, k) / C(E, k) = 1 - prod_{i &lt; k} (E - m - i) / (E - i).
    /// </summary>
    public static double HitProbability(int experts, int held, int topK)
    {
        if (held <= 0) return 0;
        if (experts - held < topK) return 1;
        var miss = 1.0;
        for (var i = 0; i < topK; i++) miss *= (double)(experts - held - i) / (experts - i);
        return 1 - miss;
    }
}

/// <summary>
/// A communication model that prices an EP dispatch or combine knowing the routing behind its bytes (DeepEP's kernels:
/// <see cref="LinkCommunication.PriceTokenExchange"/>). <see cref="CostModel"/> calls it for
/// <see cref="Dag.OpKind.AllToAllDispatch"/> and <see cref="Dag.OpKind.AllToAllCombine"/> when the DAG carries the routing.
/// </summary>
public interface ITokenExchangeCostModel
{
    /// <summary>Seconds of an exchange whose <paramref name="bytesPerGpu"/> count every token-expert pair.</summary>
    double TokenExchangeSeconds(double bytesPerGpu, ReadOnlySpan<int> gpus, TokenRouting routing);
}

/// <summary>
/// DeepEP's kernels as data (<c>data/alltoall/*.json</c>): the fixed cost of the low-latency kernels, derived from
/// DeepEP's published measurements (the file names the row and the arithmetic). The bandwidth side needs no data: it is
/// the description's NVLink and NIC bandwidths with the bytes each kernel moves (<see cref="LinkCommunication"/>).
/// </summary>
public sealed record DeepEpKernels(string Name, double LowLatencyKernelSeconds, string Source)
{
    public const double MaxKernelSeconds = 1e-2;

    public DeepEpKernels Validated(string path = "", string? source = null)
    {
        Validate.NotEmpty(Child(path, "name"), Name);
        Validate.InRange(Child(path, "lowLatencyKernelSeconds"), LowLatencyKernelSeconds, 0, MaxKernelSeconds);
        return this;
    }

    private static string Child(string path, string key) => path.Length == 0 ? key : $"{path}.{key}";

    public static DeepEpKernels Read(JsonObjectReader r)
    {
        var k = new DeepEpKernels(r.String("name"), r.Double("lowLatencyKernelSeconds"), r.OptionalString("source") ?? "");
        r.Finish();
        return k.Validated(r.Path, r.Source);
    }

    private static readonly Lazy<IReadOnlyDictionary<string, DeepEpKernels>> Catalog = new(() => EmbeddedCatalog.Load("alltoall", Read, t => t.Name));

    /// <summary>DeepEP V1's published figures (<c>data/alltoall/deepep-v1.json</c>).</summary>
    public static DeepEpKernels Default => Get("deepep-v1");

    public static DeepEpKernels Get(string name, string field = "costModel.deepEp", string? source = null) =>
        Catalog.Value.TryGetValue(name, out var t) ? t
            : throw new ConfigException(field, $"\"{name}\"", $"is not a known DeepEP kernel table; known: {string.Join(", ", Catalog.Value.Keys.Order())}", source);
}
