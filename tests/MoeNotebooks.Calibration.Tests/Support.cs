using MoeNotebooks.Calibration;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration.Tests;

/// <summary>A fact that needs ../shared/calibration; skipped, saying where it looked, when the folder is absent.</summary>
public sealed class CalibrationDataFactAttribute : FactAttribute
{
    public CalibrationDataFactAttribute()
    {
        if (PublicData.Locate() is null) Skip = CalibrationData.WhyMissing();
    }
}

/// <summary>The validation report on the real data, computed once for all tests.</summary>
public static class RealData
{
    private static readonly Lazy<ValidationReport> Lazy = new(() => Validation.Run(PublicData.Locate()!));
    public static ValidationReport Report => Lazy.Value;
    public static PublicData Data => PublicData.Locate()!;
}
