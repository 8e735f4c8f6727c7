DROP TABLE interview_feedback;
DROP TABLE interviews;
DROP TABLE applications;
