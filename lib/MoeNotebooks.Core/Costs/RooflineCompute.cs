using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>
/// Roofline: a GEMM takes the longer of its compute time and its memory time,
/// max(2mkn / (peak x eff), (mk + kn + mn) x bytes / (HBM bandwidth x memEff)). With <see cref="EfficiencyTable.Ideal"/>
/// this is the ideal roofline.
/// </summary>
public sealed class RooflineCompute(GpuSpec gpu, EfficiencyTable efficiency) : IComputeCostModel
{
    public GpuSpec Gpu { get; } = gpu;
    public EfficiencyTable Efficiency { get; } = efficiency;
    public string Name => Efficiency == EfficiencyTable.Ideal ? "roofline-ideal" : $"roofline-efficiency({Efficiency.Name})";

    public double MatmulSeconds(MatmulShape shape, string dtype, int elementBytes)
    {
        var flops = shape.Flops;
        // flops / (peak x efficiency), capped below each step so that a bigger GEMM is never faster.
        var computeSeconds = Efficiency.PeakEquivalentFlops(flops) / Gpu.PeakFor(dtype);
        var memorySeconds = shape.Elements * elementBytes / (Gpu.HbmBytesPerSecond * Efficiency.Memory);
        return Math.Max(computeSeconds, memorySeconds);
    }

    public double ElementwiseSeconds(double bytes) => bytes / (Gpu.HbmBytesPerSecond * Efficiency.Memory);
}
