using MoeNotebooks.Calibration;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration.Tests;

/// <summary>A fact that needs ../shared/calibration; skipped, saying where it looked, when the folder is absent.</summary>
public sealed class CalibrationDataFactAttribute : FactAttribute
{
    // The reason is also put in the display name: `dotnet test` prints skipped tests by name at its default verbosity,
    // but not their reason.
    public CalibrationDataFactAttribute([System.Runtime.CompilerServices.CallerMemberName] string test = "")
    {
        if (PublicData.Locate() is null)
        {
            Skip = CalibrationData.WhyMissing();
            DisplayName = $"{test} [SKIPPED: {Skip}]";
        }
    }
}

/// <summary>The validation report on the real data, computed once for all tests.</summary>
public static class RealData
{
    private static readonly Lazy<ValidationReport> Lazy = new(() => Validation.Run(PublicData.Locate()!));
    public static ValidationReport Report => Lazy.Value;
    public static PublicData Data => PublicData.Locate()!;
}
