// common/dataset.h — what `--data DIR` is, told from the files it holds, before anything is
// read (so the model, whose classifier size follows the dataset, is built first):
//   DIR/train/ is a directory        an image folder (common/image_folder.h)
//   DIR/train.bin                    CIFAR-100 binary, fine labels (common/cifar.h)
//   otherwise                        CIFAR-10 binary (also when DIR does not exist yet: the
//                                    loader then says what is missing, or vit_train fetches it)
#pragma once
#include <string>
#include <vector>

namespace vit {

enum class DataFormat { Cifar10, Cifar100, ImageFolder };
const char* data_format_name(DataFormat f);  // "cifar-10" | "cifar-100" | "image-folder"

struct DatasetInfo {
  DataFormat format = DataFormat::Cifar10;
  // The class count the dataset fixes: the folders of an image folder, 100 for CIFAR-100;
  // 0 for CIFAR-10, whose labels are only checked against the model's --classes.
  int classes = 0;
  // Display names in class-index order (folder names, fine_label_names.txt, batches.meta.txt);
  // empty when the dataset names none.
  std::vector<std::string> class_names;
  // The size its images are stored at when the dataset fixes it (32 for CIFAR), else 0 (an
  // image folder is resized to the size asked for).
  int native_size = 0;
};

// Throws vit::Error only for an image folder without class folders.
DatasetInfo probe_dataset(const std::string& dir);

}  // namespace vit
