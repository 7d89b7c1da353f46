using System.Globalization;

namespace MoeNotebooks.Dag;

/// <summary>
/// C[m x n] = A[m x k] . B[k x n], repeated <see cref="Batch"/> times (a batched GEMM, e.g. one score matrix per sequence).
/// The founding document writes Get_Time(m, k, n); a batched shape with Batch = b prints as b·Get_Time(m, k, n) inside one kernel.
/// </summary>
public readonly record struct MatmulShape(long M, long K, long N, long Batch = 1)
{
    public double Flops => 2.0 * Batch * M * K * N;

    /// <summary>Elements read and written once each: b(mk + kn + mn).</summary>
    public double Elements => (double)Batch * ((double)M * K + (double)K * N + (double)M * N);

    public override string ToString() => Batch == 1
        ? string.Create(CultureInfo.InvariantCulture, $"Get_Time({M}, {K}, {N})")
        : string.Create(CultureInfo.InvariantCulture, $"Get_Time[b={Batch}]({M}, {K}, {N})");
}
