using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>Runs every validation suite on the shared measurements.</summary>
public static class Validation
{
    public static ValidationReport Run(PublicData data)
    {
        var predictor = Sc21Predictor.Calibrated(data);
        var gemm = data.Gemm();
        var comm = data.Collectives();
        var training = TrainingCase.Read(data.PathOf(PublicData.TrainingFile));
        return new ValidationReport(data.Directory,
        [
            GemmSuites.HeldOut(gemm),
            GemmSuites.TileWave(gemm),
            CollectiveSuites.Calibrated(comm),
            CollectiveSuites.LeaveOneSizeOut(comm),
            CollectiveSuites.Datasheet(comm),
            CollectiveSuites.ByLevel(comm, CollectiveSuites.Level.IntraNode, calibrated: false),
            CollectiveSuites.ByLevel(comm, CollectiveSuites.Level.InterNode, calibrated: false),
            CollectiveSuites.ByLevel(comm, CollectiveSuites.Level.IntraNode, calibrated: false, NcclTuning.Default),
            CollectiveSuites.ByLevel(comm, CollectiveSuites.Level.InterNode, calibrated: false, NcclTuning.Default),
            CollectiveSuites.ByLevel(comm, CollectiveSuites.Level.IntraNode, calibrated: true),
            CollectiveSuites.ByLevel(comm, CollectiveSuites.Level.InterNode, calibrated: true),
            TrainingSuite.Run(training, predictor),
            .. ModernSuite.Suites(ModernSuite.Run(data)),
        ]);
    }
}
