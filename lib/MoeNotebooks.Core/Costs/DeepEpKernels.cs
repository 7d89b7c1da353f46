using MoeNotebooks.Config;

namespace MoeNotebooks.Costs;

/// <summary>
/// DeepEP's kernels as data (<c>data/alltoall/*.json</c>): the fixed cost of the low-latency kernels, derived from
/// DeepEP's published measurements (the file names the row and the arithmetic). The bandwidth side needs no data: it is
/// the description's NVLink and NIC bandwidths with the bytes each kernel moves (<see cref="LinkCommunication"/>: the
/// low-latency kernels every token-expert pair, the normal kernels de-duplicated, <see cref="LinkCommunication.PriceRouted"/>).
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
