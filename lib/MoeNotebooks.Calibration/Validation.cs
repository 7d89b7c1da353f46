namespace MoeNotebooks.Calibration;

/// <summary>Runs every validation suite on the shared measurements.</summary>
public static class Validation
{
    /// <summary>What the end-to-end suite waits for until the core builds dense training steps.</summary>
    public const string TrainingWaitingFor =
        "dense models with a vocabulary, a training step (forward + backward + recompute) and 1F1B pipeline schedules in the core (issue 4)";

    /// <param name="trainingIterationSeconds">Prices an SC21 case's iteration; null until the core supports training steps.</param>
    public static ValidationReport Run(PublicData data, Func<TrainingCase, double?>? trainingIterationSeconds = null)
    {
        if (trainingIterationSeconds is null)
        {
            var predictor = Sc21Predictor.Calibrated(data);
            trainingIterationSeconds = c => predictor.Predict(c).IterationSeconds;
        }
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
            TrainingSuite.Run(training, trainingIterationSeconds, TrainingWaitingFor),
        ]);
    }
}
